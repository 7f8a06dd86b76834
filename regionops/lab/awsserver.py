"""The lab's S3 and Route53: moto's server, with its state kept on disk across restarts.

moto keeps every bucket, object (and object version), multipart upload, hosted zone and
record in memory.  This process serves moto's WSGI application itself and saves the S3
and Route53 backends to one file in the lab directory:

- on a graceful stop (SIGTERM or SIGINT, which ``lab down`` sends): the server stops
  accepting requests, finishes the ones in flight, and the state is saved;
- while it runs, after changes, once no request has arrived for ``quiet_seconds``
  (a checkpoint), so a hard kill (SIGKILL, power loss) loses only what changed in the
  last few seconds before it;
- at start-up the file, if present, is loaded before the port opens.

Each save writes a temporary file and renames it over the old one, so a crash during a
save leaves the previous state, never half a file.  The file is a pickle of moto's own
objects: it is trusted like the rest of the lab directory, and it is tied to the moto
version that wrote it (a different version refuses to load it and says so).

The server is built by :func:`make_aws_server`; with ``--cert``/``--key`` it serves HTTPS
(pgBackRest speaks only HTTPS to S3).  Each connection ends with a TLS close
(``close_notify``) before the socket closes: werkzeug's handler just closes it, which
pgBackRest reports as "unexpected eof".
"""

from __future__ import annotations

import argparse
import copyreg
import logging
import os
import pickle
import signal
import ssl
import sys
import tempfile
import threading
import time
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from moto.backends import get_backend
from moto.core.base_backend import BackendDict
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.s3.utils import _VersionedKeyStore
from werkzeug.serving import BaseWSGIServer, make_server

from regionops.errors import ConfigurationError

log = logging.getLogger(__name__)

SERVICES = ("s3", "route53")
FORMAT = 1
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# moto's key store is a dict whose items() yield only each key's latest version, so the
# default pickling of a dict subclass would drop every older version: keep the lists.
def _rebuild_key_store(lists: dict[str, list[Any]]) -> _VersionedKeyStore:
    store = _VersionedKeyStore()
    for key, versions in lists.items():
        dict.__setitem__(store, key, list(versions))
    return store


def _reduce_key_store(store: _VersionedKeyStore) -> tuple[Any, tuple[dict[str, list[Any]]]]:
    return _rebuild_key_store, ({k: list(v) for k, v in dict.items(store)},)


copyreg.pickle(_VersionedKeyStore, _reduce_key_store)


def moto_version() -> str:
    """The installed moto's version (recorded in the state file)."""
    return package_version("moto")


def backends_of(service: str) -> BackendDict[Any]:
    """moto's backends of one of :data:`SERVICES` (its ``get_backend`` is typed for literal names only)."""
    if service == "s3":
        return get_backend("s3")
    if service == "route53":
        return get_backend("route53")
    raise ConfigurationError(f"the lab's AWS server keeps no {service!r} state (only {', '.join(SERVICES)})")


def snapshot() -> dict[str, Any]:
    """The S3 and Route53 backends of every account and region, as plain nested dicts."""
    return {
        "format": FORMAT,
        "moto": moto_version(),
        "services": {
            svc: {account: dict(dict.items(regions)) for account, regions in dict.items(backends_of(svc))}
            for svc in SERVICES
        },
    }


def save_state(path: Path) -> int:
    """Write the current state to ``path`` atomically; returns its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps(snapshot(), protocol=pickle.HIGHEST_PROTOCOL)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def load_state(path: Path) -> int:
    """Put the state saved in ``path`` into moto's backends; returns the number of backends restored.

    A missing file is an empty state (0).  A file another moto version wrote, or one that
    does not unpickle, is a :class:`ConfigurationError` naming the file: starting empty
    would silently lose every backup in it.
    """
    if not path.exists():
        return 0
    try:
        doc = pickle.loads(path.read_bytes())  # noqa: S301 - our own file in the lab directory
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise ConfigurationError(
            f"cannot read the lab's S3/Route53 state {path}: {type(exc).__name__}: {exc}; move the file "
            "aside to start with empty buckets (every stored backup is then lost), or reinstall the moto "
            "version that wrote it"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("moto") != moto_version():
        wrote = doc.get("moto") if isinstance(doc, dict) else "an unknown version"
        raise ConfigurationError(
            f"the lab's S3/Route53 state {path} was written by moto {wrote}, this is moto {moto_version()}: "
            "reinstall that version (make setup), or move the file aside to start with empty buckets"
        )
    restored = 0
    for svc, accounts in doc["services"].items():
        backends = backends_of(svc)
        for account, regions in accounts.items():
            for region, backend in regions.items():
                backends[account][region] = backend
                restored += 1
    return restored


class _Persisting:
    """WSGI middleware: notes changes, and lets a checkpoint run only between requests.

    Requests wait while a checkpoint pickles the backends (a pickle taken while a request
    mutates them could fail or be inconsistent); a checkpoint waits for requests in flight.
    """

    def __init__(self, app: Any, state_file: Path, quiet_seconds: float):
        self.app = app
        self.state_file = state_file
        self.quiet_seconds = quiet_seconds
        self._cond = threading.Condition()
        self._in_flight = 0
        self._saving = False
        self._dirty = False
        self._last_request = time.monotonic()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: not self._saving)
            self._in_flight += 1
            if environ.get("REQUEST_METHOD", "GET") not in READ_ONLY_METHODS:
                self._dirty = True
        try:
            # moto answers with a list of bytes: the response is complete when this returns.
            return self.app(environ, start_response)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._last_request = time.monotonic()
                self._cond.notify_all()

    def checkpoint(self, force: bool = False, final: bool = False) -> bool:
        """Save the state when something changed (and, unless ``force``, the server is quiet).

        ``final``: the gate stays closed afterwards, so no request can change the state
        (and be answered) after the last save; such a request gets no answer instead.
        """
        with self._cond:
            quiet = time.monotonic() - self._last_request >= self.quiet_seconds
            if final:
                self._saving = True
                self._cond.wait_for(lambda: self._in_flight == 0)
            if not self._dirty or not (quiet or force):
                return False
            self._saving = True
            self._cond.wait_for(lambda: self._in_flight == 0)
            self._dirty = False
        try:
            started = time.monotonic()
            size = save_state(self.state_file)
            log.info("saved S3/Route53 state (%d bytes) in %.2f s", size, time.monotonic() - started)
            return True
        except BaseException:
            self._dirty = True
            raise
        finally:
            with self._cond:
                self._saving = final
                self._cond.notify_all()


class TlsClosingRequestHandler(MotoRequestHandler):
    """moto's request handler that shuts TLS down cleanly (``unwrap``) when a connection ends."""

    def finish(self) -> None:
        """Flush the response, then send close_notify (and wait briefly for the client's)."""
        try:
            super().finish()
        finally:
            conn = self.connection
            if isinstance(conn, ssl.SSLSocket):
                try:
                    conn.settimeout(1.0)  # a client that never answers close_notify must not hold the thread
                    conn.unwrap()
                except (TimeoutError, OSError, ValueError):
                    pass  # the client went first or is gone: nothing left to close cleanly


def make_aws_server(
    host: str, port: int, state_file: Path, *, quiet_seconds: float = 2.0, ssl_context: Any = None
) -> tuple[BaseWSGIServer, _Persisting]:
    """moto's S3 + Route53 application behind the persistence middleware, bound but not yet serving."""
    load_state(state_file)
    app = _Persisting(DomainDispatcherApplication(create_backend_app), state_file, quiet_seconds)
    handler = TlsClosingRequestHandler if ssl_context is not None else MotoRequestHandler
    server = make_server(host, port, app, threaded=True, request_handler=handler, ssl_context=ssl_context)
    return server, app


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for the certificate ``cert`` and its key ``key``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def serve(
    host: str, port: int, state_file: Path, quiet_seconds: float = 2.0, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Serve until SIGTERM/SIGINT, checkpointing after changes; save once more on the way out."""
    os.environ.setdefault("MOTO_PORT", str(port))  # moto builds some URLs from it
    server, app = make_aws_server(host, port, state_file, quiet_seconds=quiet_seconds, ssl_context=ssl_context)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    thread = threading.Thread(target=server.serve_forever, name="aws-server", daemon=True)
    thread.start()
    log.info(
        "serving S3 and Route53 on %s://%s:%d, state in %s", "https" if ssl_context else "http", host, port, state_file
    )
    while not stopping.wait(min(1.0, quiet_seconds)):
        try:
            app.checkpoint()
        except Exception:  # noqa: BLE001 - keep serving; the next checkpoint or the final save retries
            log.exception("checkpoint of the S3/Route53 state failed")
    server.shutdown()  # stops accepting; requests in flight finish in their own threads
    thread.join()
    app.checkpoint(force=True, final=True)
    log.info("stopped; state saved in %s", state_file)


def main(argv: list[str] | None = None) -> int:
    """``python -m regionops.lab.awsserver --port N --state-file PATH``."""
    parser = argparse.ArgumentParser(description="moto's S3 and Route53 with state kept across restarts")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-file", type=Path, required=True, help="where the state is saved and loaded")
    parser.add_argument(
        "--quiet-seconds", type=float, default=2.0, help="checkpoint after changes once no request came for this long"
    )
    parser.add_argument("--cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--key", type=Path, help="the certificate's private key (PEM)")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key):
        parser.error("--cert and --key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        context = tls_context(args.cert, args.key) if args.cert else None
        serve(args.host, args.port, args.state_file, args.quiet_seconds, ssl_context=context)
    except ConfigurationError as exc:
        print(f"awsserver: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
