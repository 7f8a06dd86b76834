"""pgBackRest's typed results: what a command did, and ``pgbackrest info`` parsed into a stanza's backups."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from regionops.errors import (
    ExternalSystemError,
    PreconditionFailed,
)


# -- typed results -------------------------------------------------------------------------
class CommandResult(BaseModel):
    """A command that succeeded (stanza-create, check, expire)."""

    command: str
    stanza: str
    node: str
    seconds: float
    detail: str = ""

    def sentence(self) -> str:
        extra = f": {self.detail}" if self.detail else ""
        return f"pgbackrest {self.command} of stanza {self.stanza} on {self.node} in {self.seconds:.1f} s{extra}"


class BackupInfo(BaseModel):
    """One backup in one repository, from ``info --output=json``."""

    label: str
    type: str
    repo: int
    started: datetime
    stopped: datetime
    size: int = Field(description="database size in bytes")
    repo_size: int = Field(description="bytes stored in the repository")
    delta: int = Field(0, description="bytes of the database this backup copied (all of it for a full)")
    wal_start: str | None = None
    wal_stop: str | None = None
    lsn_start: str | None = None
    lsn_stop: str | None = None
    prior: str | None = None
    error: bool = False

    def sentence(self) -> str:
        return (
            f"{self.type} backup {self.label} in repo{self.repo}, {self.size} bytes ({self.repo_size} stored), "
            f"taken {self.started:%Y-%m-%d %H:%M:%S}Z-{self.stopped:%H:%M:%S}Z"
        )


class RepoStatus(BaseModel):
    """One repository's status in ``info``."""

    repo: int
    ok: bool
    message: str


class StanzaInfo(BaseModel):
    """``info --output=json`` for one stanza: its backups (oldest first) and WAL archive range per repo."""

    stanza: str
    ok: bool
    status: str
    backups: list[BackupInfo]
    repos: list[RepoStatus]
    archive_min: str | None = None
    archive_max: str | None = None

    def newest(self, repo: int | None = None) -> BackupInfo | None:
        """The newest good backup (of ``repo`` when given)."""
        good = [b for b in self.backups if not b.error and (repo is None or b.repo == repo)]
        return good[-1] if good else None

    def sentence(self) -> str:
        newest = self.newest()
        tail = f"; newest: {newest.sentence()}" if newest else "; no backup yet"
        wal = f"; WAL {self.archive_min}..{self.archive_max}" if self.archive_max else ""
        return f"stanza {self.stanza} {self.status}: {len(self.backups)} backup(s){wal}{tail}"


class BackupResult(BaseModel):
    """A finished backup."""

    node: str
    repo: int
    type: str
    label: str | None = Field(None, description="pgBackRest's label, e.g. 20261124-225513F")
    seconds: float
    backup: BackupInfo | None = Field(None, description="its info entry, when asked for (describe=True)")

    def sentence(self) -> str:
        what = self.backup.sentence() if self.backup else f"{self.type} backup {self.label or ''} in repo{self.repo}"
        return f"{what}; taken from {self.node} in {self.seconds:.1f} s"


class VerifyResult(BaseModel):
    """``verify``: the repository's backups and WAL are readable and match their checksums."""

    repo: int
    ok: bool
    seconds: float
    problems: list[str] = []

    def sentence(self) -> str:
        if self.ok:
            return f"repo{self.repo} verified in {self.seconds:.1f} s: every backup and WAL file checks out"
        return f"repo{self.repo} verification found {len(self.problems)} problem(s): " + "; ".join(self.problems)


class RestoreResult(BaseModel):
    """A restore into a directory (not started)."""

    directory: str
    target: str
    repo: int
    backup_set: str | None
    seconds: float

    def sentence(self) -> str:
        source = f"backup {self.backup_set}" if self.backup_set else "the newest backup"
        return (
            f"restored {source} from repo{self.repo} into {self.directory}, recovering to {self.target}, "
            f"in {self.seconds:.1f} s"
        )


def _lsn_pair(value: dict | None) -> tuple[str | None, str | None]:
    return (value or {}).get("start"), (value or {}).get("stop")


def parse_info(text: str, stanza: str) -> StanzaInfo:
    """The typed form of ``pgbackrest info --output=json`` for ``stanza``."""
    try:
        docs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExternalSystemError(f"pgbackrest info printed no JSON: {text[:200]!r}") from exc
    doc = next((d for d in docs if d.get("name") == stanza), None)
    if doc is None:
        raise PreconditionFailed(f"pgbackrest info knows no stanza {stanza!r}")
    backups = []
    for b in doc.get("backup", []):
        wal_start, wal_stop = _lsn_pair(b.get("archive"))
        lsn_start, lsn_stop = _lsn_pair(b.get("lsn"))
        backups.append(
            BackupInfo(
                label=b["label"],
                type=b["type"],
                repo=int(b.get("database", {}).get("repo-key", 1)),
                started=datetime.fromtimestamp(b["timestamp"]["start"], UTC),
                stopped=datetime.fromtimestamp(b["timestamp"]["stop"], UTC),
                size=int(b.get("info", {}).get("size", 0)),
                repo_size=int(b.get("info", {}).get("repository", {}).get("size", 0)),
                delta=int(b.get("info", {}).get("delta", 0)),
                wal_start=wal_start,
                wal_stop=wal_stop,
                lsn_start=lsn_start,
                lsn_stop=lsn_stop,
                prior=b.get("prior"),
                error=bool(b.get("error", False)),
            )
        )
    backups.sort(key=lambda b: (b.stopped, b.label))
    archives = doc.get("archive", [])
    status = doc.get("status", {})
    repos = [
        RepoStatus(
            repo=int(r["key"]), ok=r.get("status", {}).get("code") == 0, message=r.get("status", {}).get("message", "")
        )
        for r in doc.get("repo", [])
    ]
    return StanzaInfo(
        stanza=stanza,
        ok=status.get("code") == 0,
        status=status.get("message", "unknown"),
        backups=backups,
        repos=repos,
        archive_min=min((a["min"] for a in archives if a.get("min")), default=None),
        archive_max=max((a["max"] for a in archives if a.get("max")), default=None),
    )
