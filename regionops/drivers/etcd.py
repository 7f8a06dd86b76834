"""The one etcd seam: etcd v3 through its JSON gateway (httpx), errors mapped at the boundary.

etcd is the quorum store (one member per region): a request answers only when a majority
of members agrees, so a member cut off from the others answers nothing, and what this
client reads or writes is what every region will see.  Keys and values travel base64
encoded (the gateway's form); revisions come back as strings and are returned as ints.

The client tries its endpoints in order (put the caller's own region first) and moves
on when one does not answer within ``timeout``: a member on the minority side of a
partition times out, its peers on the majority side answer.  When none answers,
:class:`QuorumUnavailable` names what each one said.  A write that ends so was not
acknowledged, but its outcome is unknown (raft may still commit it once the majority is
back, etcd's own semantics): a caller re-reads before it relies on either outcome.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx

from regionops.errors import ExternalSystemError, TransientError


class QuorumUnavailable(TransientError):
    """No etcd member answered with the quorum's word (all unreachable, or cut off from the majority)."""


class QuorumRefused(ExternalSystemError):
    """etcd answered and refused the request (a malformed request, an unknown lease)."""


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd holds it: its value and the revisions that order every change."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0

    def json(self) -> Any:
        """The value parsed as JSON."""
        return json.loads(self.value)


@dataclass(frozen=True)
class Lease:
    """A lease granted by the quorum: keys attached to it vanish when it is not kept alive for ``ttl`` seconds."""

    id: int
    ttl: int


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def _kv(doc: dict[str, Any]) -> KeyValue:
    return KeyValue(
        key=_unb64(doc["key"]).decode(),
        value=_unb64(doc.get("value")),
        create_revision=int(doc.get("create_revision", 0)),
        mod_revision=int(doc.get("mod_revision", 0)),
        lease=int(doc.get("lease", 0)),
    )


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (etcd's prefix convention)."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return raw.decode()


class EtcdClient:
    """etcd v3 over the JSON gateway: reads, create-only and compare-and-swap writes, leases."""

    def __init__(self, endpoints: list[str], timeout: float = 2.0, client: httpx.Client | None = None):
        if not endpoints:
            raise ValueError("an etcd client needs at least one endpoint")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.timeout = timeout
        self.client = client or httpx.Client(timeout=timeout)

    # -- transport ------------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that answers for the quorum."""
        failures: list[str] = []
        for endpoint in self.endpoints:
            try:
                response = self.client.post(f"{endpoint}/v3/{path}", json=body, timeout=self.timeout)
            except httpx.HTTPError as exc:
                failures.append(f"{endpoint}: {type(exc).__name__} {exc}".strip())
                continue
            doc = _json(response)
            if response.status_code == 200 and "error" not in doc:
                return doc
            message = str(doc.get("error") or doc.get("message") or response.text[:200])
            if _is_unavailable(response.status_code, message):
                # This member cannot reach the majority (or has no leader yet): ask the next one.
                failures.append(f"{endpoint}: {message}")
                continue
            raise QuorumRefused(f"etcd refused {path} at {endpoint}: {message}")
        raise QuorumUnavailable("no etcd member answered for the quorum: " + "; ".join(failures))

    # -- keys -----------------------------------------------------------------------
    def get(self, key: str) -> KeyValue | None:
        """The key's value and revisions (a linearizable read), or None when absent."""
        doc = self.call("kv/range", {"key": _b64(key)})
        kvs = doc.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    def get_prefix(self, prefix: str) -> list[KeyValue]:
        """Every key under ``prefix``, in key order."""
        doc = self.call("kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        return [_kv(d) for d in doc.get("kvs") or []]

    def put(self, key: str, value: str | bytes, lease: int = 0) -> int:
        """Write ``key`` unconditionally; the store's revision after the write."""
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("kv/put", body)["header"]["revision"])

    def create(self, key: str, value: str | bytes, lease: int = 0) -> tuple[bool, KeyValue | None]:
        """Write ``key`` only if it does not exist: (True, None), or (False, the key that exists)."""
        return self.txn(
            compare=[_cmp_create(key, 0)],
            success=[_put_op(key, value, lease)],
            failure=[{"request_range": {"key": _b64(key)}}],
        )

    def replace(self, key: str, value: str | bytes, mod_revision: int, lease: int = 0) -> tuple[bool, KeyValue | None]:
        """Write ``key`` only if it is still at ``mod_revision`` (compare-and-swap); else (False, what it is now)."""
        return self.txn(
            compare=[_cmp_mod(key, mod_revision)],
            success=[_put_op(key, value, lease)],
            failure=[{"request_range": {"key": _b64(key)}}],
        )

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete ``key`` (only if still at ``mod_revision`` when given); whether a key was deleted."""
        op = {"request_delete_range": {"key": _b64(key)}}
        compare = [_cmp_mod(key, mod_revision)] if mod_revision is not None else []
        doc = self.call("kv/txn", {"compare": compare, "success": [op], "failure": []})
        if not doc.get("succeeded"):
            return False
        responses = doc.get("responses") or [{}]
        return int(responses[0].get("response_delete_range", {}).get("deleted", 0)) > 0

    def move(self, current: KeyValue, to_key: str, value: str | bytes) -> bool:
        """Write ``to_key`` and delete ``current.key`` in one step, only if ``current`` is unchanged."""
        succeeded, _ = self.txn(
            compare=[_cmp_mod(current.key, current.mod_revision)],
            success=[_put_op(to_key, value), {"request_delete_range": {"key": _b64(current.key)}}],
            failure=[],
        )
        return succeeded

    def txn(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]]
    ) -> tuple[bool, KeyValue | None]:
        """An atomic compare-then-act; on failure the first key the failure branch read (if any)."""
        doc = self.call("kv/txn", {"compare": compare, "success": success, "failure": failure})
        if doc.get("succeeded"):
            return True, None
        for response in doc.get("responses") or []:
            kvs = response.get("response_range", {}).get("kvs") or []
            if kvs:
                return False, _kv(kvs[0])
        return False, None

    # -- leases ---------------------------------------------------------------------
    def grant(self, ttl: int) -> Lease:
        """A new lease of ``ttl`` seconds (keys attached to it vanish unless it is kept alive)."""
        doc = self.call("lease/grant", {"TTL": str(ttl)})
        return Lease(id=int(doc["ID"]), ttl=int(doc["TTL"]))

    def keepalive(self, lease: int) -> int:
        """Renew ``lease`` for its whole TTL; the TTL it has now (0: it had expired, its keys are gone)."""
        doc = self.call("lease/keepalive", {"ID": str(lease)})
        return int((doc.get("result") or doc).get("TTL", 0))

    def time_to_live(self, lease: int) -> int:
        """Seconds left on ``lease`` (-1 or 0: expired or unknown)."""
        doc = self.call("lease/timetolive", {"ID": str(lease)})
        return int(doc.get("TTL", -1))

    def revoke(self, lease: int) -> None:
        """End ``lease`` now: its keys are deleted at once (an unknown lease is already gone)."""
        try:
            self.call("lease/revoke", {"ID": str(lease)})
        except QuorumRefused as exc:
            if "not found" not in str(exc):
                raise

    # -- the cluster ------------------------------------------------------------------
    def member_health(self, endpoint: str) -> bool:
        """Whether the member at ``endpoint`` answers and sees a leader (etcd's own /health)."""
        try:
            response = self.client.get(f"{endpoint.rstrip('/')}/health", timeout=self.timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and _json(response).get("health") == "true"

    def close(self) -> None:
        self.client.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        return {}
    # The gateway answers a stream (lease keepalive) as one {"result": ...} document.
    return doc if isinstance(doc, dict) else {}


def _is_unavailable(status: int, message: str) -> bool:
    lowered = message.lower()
    return status in (502, 503, 504) or any(
        s in lowered for s in ("timed out", "no leader", "leader changed", "unavailable", "not capable")
    )


def _cmp_create(key: str, revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": str(revision)}


def _cmp_mod(key: str, revision: int) -> dict[str, Any]:
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def _put_op(key: str, value: str | bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"request_put": put}
