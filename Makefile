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

# pgBackRest (the backup engine; the lab archives WAL through it), etcd (the quorum store),
# Prometheus, Alertmanager, postgres_exporter, Pushgateway (Debian packages): installed when
# missing and root, else named.  Without pgBackRest or etcd this fails; without monitoring
# the lab runs, its tests do not.
monitoring-tools: setup
	@$(PY) -m regionops.monitoring.tools --install

demo: setup monitoring-tools
	$(VENV)/bin/regionops demo

# Two pytest workers, each with its own session lab (labs take free ports), whole modules per
# worker (module fixtures such as private clusters stay in one process).  TEST_WORKERS=0: serial.
TEST_WORKERS ?= 2
test: setup monitoring-tools
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

test-unit: setup
	$(PY) -m pytest tests/unit

# The gates CI runs before the tests: lint, formatting and types (configuration in pyproject.toml).
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Every speed goal printed against its figure, then one table of met / not met (bench/goals.py).
BENCHES := backup failover drill alert_path node_step
bench: setup monitoring-tools
	@rm -f .bench-goals.jsonl
	@for b in $(BENCHES); do REGIONOPS_BENCH_GOALS=$(CURDIR)/.bench-goals.jsonl $(PY) bench/$$b.py || echo "bench/$$b.py failed"; done
	@$(PY) bench/goals.py .bench-goals.jsonl $(BENCHES)

lab-up: setup
	$(VENV)/bin/regionops lab up

lab-status: setup
	$(VENV)/bin/regionops lab status

lab-down: setup
	$(VENV)/bin/regionops lab down

clean: lab-down
	rm -rf $(VENV) .lab
