"""Where a node step stands before it acts: the pure decision (no I/O here).

A node step must run on the node's own host or not at all (issue 8): a worker in the
wrong region, or a data directory that belongs to another node (the same path on a
different host, another cluster's directory), must make it refuse before it changes
anything.  The caller gathers the facts (:class:`StandingFacts`); :func:`judge_standing`
decides.
"""

from __future__ import annotations

from pydantic import BaseModel


class StandingFacts(BaseModel):
    """What a node step observed about where it runs and the data directory it would touch."""

    node: str
    node_region: str
    node_port: int
    worker_region: str | None = None  # REGIONOPS_REGION of the worker; None on a single machine
    check_region: bool = False  # a regional run always checks; the single-machine operator does not
    data_dir: str
    data_dir_exists: bool
    dir_system_identifier: str | None = None  # from pg_controldata
    dir_port: int | None = None  # from the directory's configuration files
    cluster_system_identifier: str | None = None  # reported over SQL by a reachable member, or recorded
    reported_by: str | None = None  # which member reported it (or which record holds it)


class Standing(BaseModel):
    """The verdict: may this step act on this data directory here?"""

    node: str
    ok: bool
    reasons: list[str]  # why not (empty when ok)
    notes: list[str] = []  # what could not be checked, said out loud

    def sentence(self) -> str:
        """One line for logs, reports and the refusal's message."""
        if self.ok:
            extra = f" ({'; '.join(self.notes)})" if self.notes else ""
            return f"this worker stands where {self.node}'s steps belong{extra}"
        return f"refusing to act on {self.node}: " + "; ".join(self.reasons) + "; nothing was changed"


def judge_standing(f: StandingFacts) -> Standing:
    """Decide whether a node step may act, from the facts it gathered.

    - region: with ``check_region``, the worker's ``REGIONOPS_REGION`` must be set and
      equal the node's region;
    - a data directory that exists must carry the cluster's system identifier and the
      node's own port.  The identifier comes from a reachable member, or, when none
      answers, from the record made when the cluster was last seen healthy
      (:mod:`regionops.ha.identity`); with neither, the step refuses: it cannot prove the
      directory is the cluster's.  A missing directory has nothing to protect (a re-clone
      or restore creates it), so only the region counts then.
    """
    reasons: list[str] = []
    notes: list[str] = []
    if f.check_region:
        if not f.worker_region:
            reasons.append(f"this worker has no REGIONOPS_REGION, so it cannot prove it runs in {f.node_region}")
        elif f.worker_region != f.node_region:
            reasons.append(f"this worker runs in region {f.worker_region}, but {f.node} is in {f.node_region}")
    if f.data_dir_exists:
        if f.cluster_system_identifier is None:
            reasons.append(
                f"no member of the cluster answered over SQL and no system identifier was recorded when it was last "
                f"seen healthy, so nothing proves that {f.data_dir} holds this cluster's data (run region health "
                f"once the cluster is healthy to record it)"
            )
        elif f.dir_system_identifier != f.cluster_system_identifier:
            reasons.append(
                f"the data directory {f.data_dir} has system identifier {f.dir_system_identifier or 'unknown'}, "
                f"but the cluster ({f.reported_by}) reports {f.cluster_system_identifier}"
            )
        if f.dir_port != f.node_port:
            reasons.append(
                f"the data directory {f.data_dir} is configured for port {f.dir_port or 'unknown'}, "
                f"not {f.node}'s port {f.node_port}"
            )
    return Standing(node=f.node, ok=not reasons, reasons=reasons, notes=notes)
