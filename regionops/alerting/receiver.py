"""The alert receiver: Alertmanager webhook (payload version 4) in, Prefect events out.

Prefect's self-hosted server has no webhooks, so Alertmanager posts here::

    python -m regionops.alerting.receiver --host 0.0.0.0 --port 9095 \\
        --token-file /run/secrets/alert-receiver-token --state-dir /var/lib/regionops

``POST /alerts`` checks ``Authorization: Bearer <token>`` (401, nothing emitted),
validates the body (400 for non-JSON or a version other than "4", 422 listing every
problem; nothing emitted), then emits one ``regionops.alert.firing`` event per new
firing alert that maps to a runbook, and answers with what happened to each alert.
Deployment triggers (:mod:`deployments.triggers`) turn the events into runs.
``GET /healthz`` answers without a token.  The token is never logged.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from regionops.alerting.emitter import EmitFailed, EventEmitter, PrefectEventEmitter
from regionops.alerting.ledger import DEFAULT_TTL_SECONDS, LEDGER_FILE, AlertLedger
from regionops.alerting.payload import PayloadError, parse_payload
from regionops.alerting.processing import AlertProcessor
from regionops.errors import ConfigurationError, RunbookError
from regionops.topology import SecretRef, Topology, default_lab_dir, load_topology

# Named explicitly: run as `python -m`, __name__ is "__main__", outside our logger tree.
logger = logging.getLogger("regionops.alerting.receiver")

ALERTS_PATH = "/alerts"
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_TOKEN_ENV = "REGIONOPS_ALERT_RECEIVER_TOKEN"


def _error(
    status: int, detail: str, problems: list[str] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if problems is not None:
        body["problems"] = problems
    return JSONResponse(body, status_code=status, headers=headers)


def _authorized(header: str | None, token: bytes) -> str | None:
    """None when ``header`` carries the token; otherwise why not (without echoing anything)."""
    if not header:
        return "missing Authorization header (expected: Bearer <token>)"
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return "Authorization header is not a bearer token"
    # Constant time: the comparison must not tell an attacker how much of a guess was right.
    if not hmac.compare_digest(value.strip().encode(), token):
        return "invalid bearer token"
    return None


def create_app(
    emitter: EventEmitter,
    token: str,
    ledger: AlertLedger | None = None,
    topology: Topology | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The receiver as an ASGI app.  ``emitter`` is injected so tests can use a fake."""
    if not token:
        raise ConfigurationError("the alert receiver needs a non-empty bearer token")
    secret = token.encode()
    processor = AlertProcessor(emitter, ledger or AlertLedger(), topology)
    app = FastAPI(title="regionops alert receiver", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.processor = processor

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(ALERTS_PATH)
    async def receive(request: Request) -> JSONResponse:
        why = _authorized(request.headers.get("authorization"), secret)
        if why is not None:
            logger.warning("refused a notification from %s: %s", request.client.host if request.client else "?", why)
            return _error(401, why, headers={"WWW-Authenticate": 'Bearer realm="regionops-alerts"'})
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return _error(413, f"body of {declared} bytes exceeds the limit of {max_body_bytes}")
        # Read in chunks so a chunked (undeclared) oversized body is cut off, not buffered.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                return _error(413, f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            payload = parse_payload(body)
            receipt = await processor.process(payload)
        except PayloadError as exc:
            logger.warning("rejected a notification (%s): %s", exc.status, exc)
            return _error(exc.status, "invalid Alertmanager payload; nothing was emitted", exc.problems)
        except EmitFailed as exc:
            # 5xx so that Alertmanager retries; nothing was recorded as sent.
            logger.error("%s", exc)
            return _error(503, str(exc))
        logger.info("%s", receipt.sentence())
        return JSONResponse(receipt.model_dump(mode="json") | {"summary": receipt.sentence()})

    return app


def read_token(token_file: str | None, token_env: str | None) -> str:
    """The bearer token from a file or an environment variable.  Raises ConfigurationError."""
    ref = SecretRef(file=token_file) if token_file else SecretRef(env=token_env or DEFAULT_TOKEN_ENV)
    token = ref.resolve()
    if not token:
        raise ConfigurationError(f"bearer token {ref.describe()} is empty")
    return token


def state_dir_for(explicit: str | None, topology: Topology | None) -> Path:
    """Where the ledger lives: ``--state-dir``, else the topology's state_dir, else the lab's."""
    if explicit:
        return Path(explicit)
    if topology is not None and topology.state_dir:
        return Path(topology.state_dir)
    return default_lab_dir() / "state"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m regionops.alerting.receiver", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9095)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--token-file", help="file holding the bearer token Alertmanager sends")
    src.add_argument("--token-env", help=f"environment variable holding the token (default {DEFAULT_TOKEN_ENV})")
    p.add_argument("--state-dir", help="directory for the ledger of sent alerts (survives restarts)")
    p.add_argument("--topology", help="topology file: reject alerts for unknown clusters/nodes, resolve instance")
    p.add_argument("--prefect-api-url", help="Prefect API URL (default PREFECT_API_URL)")
    p.add_argument(
        "--dedup-ttl-seconds",
        type=float,
        default=DEFAULT_TTL_SECONDS,
        help="how long a sent alert (fingerprint@startsAt) is remembered",
    )
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _configure_logging(level: str) -> None:
    # Importing Prefect installs its own logging config (root at PREFECT_LOGGING_LEVEL),
    # which would silence the per-alert lines on-call engineers read: own our logger.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("regionops.alerting")
    ours.handlers[:] = [handler]
    ours.setLevel(level)
    ours.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver with uvicorn until interrupted."""
    import uvicorn

    args = _parse_args(argv)
    _configure_logging(args.log_level.upper())
    try:
        token = read_token(args.token_file, args.token_env)
        topology = load_topology(args.topology) if args.topology else None
        emitter = PrefectEventEmitter(args.prefect_api_url)
        ledger_path = state_dir_for(args.state_dir, topology) / LEDGER_FILE
        ledger = AlertLedger(ledger_path, ttl_seconds=args.dedup_ttl_seconds)
        app = create_app(emitter, token, ledger, topology)
    except (RunbookError, ValueError) as exc:
        print(f"alert receiver: {exc}", file=sys.stderr)
        return 2
    logger.info(
        "alert receiver on http://%s:%s%s -> %s; ledger %s; topology %s",
        args.host,
        args.port,
        ALERTS_PATH,
        emitter.describe(),
        ledger_path,
        args.topology or "(none: labels not checked)",
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
    return 0


if __name__ == "__main__":
    sys.exit(main())
