# The two commands that matter: `make demo` (the lab + the region-health runbook) and
# `make test` (the whole suite against real services).  Both set everything up first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup monitoring-tools demo test test-unit lint bench lab-up lab-status lab-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

# pgBackRest (the backup engine; the lab archives WAL through it), Prometheus, Alertmanager,
# postgres_exporter, Pushgateway (Debian packages): installed when missing and root, else
# named.  Without pgBackRest this fails; without monitoring the lab runs, its tests do not.
monitoring-tools: setup
	@$(PY) -m regionops.monitoring.tools --install

demo: setup monitoring-tools
	$(VENV)/bin/regionops demo

test: setup monitoring-tools
	$(PY) -m pytest

test-unit: setup
	$(PY) -m pytest tests/unit

# The gates CI runs before the tests: lint, formatting and types (configuration in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/backup.py
	$(PY) bench/failover.py
	$(PY) bench/drill.py
	$(PY) bench/alert_path.py

lab-up: setup
	$(VENV)/bin/regionops lab up

lab-status: setup
	$(VENV)/bin/regionops lab status

lab-down: setup
	$(VENV)/bin/regionops lab down

clean: lab-down
	rm -rf $(VENV) .lab
