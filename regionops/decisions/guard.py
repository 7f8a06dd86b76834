"""What the guard beside one PostgreSQL server does in one cycle: the primary lease's rules.

A guard runs on each node's host.  Two records in the quorum store (etcd) decide whether
its node may take writes:

- the **designated primary** (the writer's term): the node a failover or switchover made
  primary, with a term number; written only by those runbooks (under the cluster lock),
  and by the first guard of a new cluster;
- the **primary lease**: a key on an etcd lease that the designated primary's guard keeps
  alive; a failover promotes another node only after it is gone.

The rules, in order (each decision says why in a sentence, as Patroni's ``ha.py`` does):

1. A node that is primary but cannot reach the quorum keeps taking writes only while its
   lease can still be alive; before the lease can have expired, the guard stops it.  A
   new primary is promoted only after that expiry, so the two never take writes at once.
2. A primary whose PostgreSQL does not answer is treated the same way: its lease is not
   renewed, and it is stopped before the lease can have run out (it could wake up).
3. A primary that is not the designated one is a second primary: it is stopped at once.
4. The designated primary renews its lease (or takes a new one when it has none).
5. A node that is not primary (a replica, or stopped) lets go of a lease it held, so a
   failover does not wait for it to expire.

The guard stops PostgreSQL rather than asking it to refuse writes: a client can override
``default_transaction_read_only``; it cannot override a stopped server.
"""

from __future__ import annotations

from typing import Literal

from regionops.decisions._common import Decision, fmt_seconds

GuardAction = Literal["nothing", "wait", "renew", "acquire", "release", "stop"]
LocalRole = Literal["primary", "replica", "down", "silent"]  # silent: its postmaster runs, SQL does not answer


class Designated(Decision):
    """The designated primary and its term, as the quorum store holds them."""

    node: str
    term: int


class GuardView(Decision):
    """What one guard knows at the start of a cycle."""

    node: str
    role: LocalRole
    quorum_answered: bool
    designated: Designated | None = None  # None: never designated (a new cluster), or unknown (quorum silent)
    lease_holder: str | None = None  # whose primary lease is alive now (None: none, or quorum silent)
    holds_lease: bool = False  # this guard holds a lease it renewed before
    seconds_since_renewal: float | None = None  # since the last renewal the quorum acknowledged was sent
    ttl_seconds: float
    margin_seconds: float  # stop this long before the lease can expire (clock rate, the stop's own time)


class GuardDecision(Decision):
    """The cycle's action and the sentence that explains it."""

    node: str
    action: GuardAction
    reason: str


def decide(view: GuardView) -> GuardDecision:
    """The guard's action for one cycle (a flat ladder of guard clauses, first match wins)."""
    node = view.node

    def decision(action: GuardAction, reason: str) -> GuardDecision:
        return GuardDecision(node=node, action=action, reason=reason)

    if view.role in ("replica", "down"):
        what = "a replica" if view.role == "replica" else "not running"
        if view.holds_lease:
            return decision(
                "release",
                f"{node} is {what}: releasing its primary lease so a failover need not wait for it to expire",
            )
        return decision("nothing", f"{node} is {what} and holds no primary lease")

    # The node is primary (or its postmaster runs and cannot say): it may take writes.
    if not view.quorum_answered or view.role == "silent":
        why = (
            "cannot reach the quorum (no etcd member answered)"
            if not view.quorum_answered
            else "runs but does not answer SQL"
        )
        deadline = view.ttl_seconds - view.margin_seconds
        since = view.seconds_since_renewal
        if view.holds_lease and since is not None and since < deadline:
            return decision(
                "wait",
                f"{node} {why}; its lease was renewed {fmt_seconds(since)} ago and may live "
                f"{fmt_seconds(view.ttl_seconds - since)} more: it is stopped if this lasts "
                f"{fmt_seconds(deadline - since)} longer",
            )
        held = f"renewed {fmt_seconds(since)} ago" if view.holds_lease and since is not None else "not held"
        return decision(
            "stop",
            f"{node} is primary and {why}, with its lease {held} (TTL {fmt_seconds(view.ttl_seconds)}): "
            "stopping it before the lease can expire, so it acknowledges no write that a new primary "
            "would not have",
        )

    designated = view.designated
    if designated is not None and designated.node != node:
        return decision(
            "stop",
            f"{node} is primary but {designated.node} is the designated primary (term {designated.term}): "
            f"{node} is a second primary; stopping it at once",
        )
    if view.lease_holder is not None and view.lease_holder != node:
        return decision(
            "stop",
            f"{node} is primary but {view.lease_holder} holds the primary lease: stopping {node} at once",
        )
    if designated is None:
        return decision(
            "acquire",
            f"{node} is primary and no primary was ever designated (a new cluster): "
            "designating it (term 1) and taking the primary lease",
        )
    if view.holds_lease and view.lease_holder == node:
        return decision("renew", f"{node} is the designated primary (term {designated.term}): renewing its lease")
    return decision(
        "acquire",
        f"{node} is the designated primary (term {designated.term}) and holds no lease: taking the primary lease",
    )
