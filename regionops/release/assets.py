"""Publishing a version's static assets to every region's bucket, and what changed.

An object is uploaded only when its content changed: its sha256 is kept in the
object's metadata and compared before uploading.  Each object gets a content type
(from its name) and the topology's Cache-Control.  Old objects are never deleted here:
regions still on the previous version keep being served their assets during the waves.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from pydantic import BaseModel

from regionops.drivers.objectstore import ObjectStore
from regionops.errors import PreconditionFailed

SHA_KEY = "sha256"


class AssetFile(BaseModel):
    """One file of a version's assets."""

    key: str
    path: str
    sha256: str
    size: int
    content_type: str


class BucketPublish(BaseModel):
    """What publishing did (or would do) to one region's bucket."""

    region: str
    bucket: str
    uploaded: list[str] = []
    unchanged: list[str] = []
    dry_run: bool = False

    def sentence(self) -> str:
        """One line for logs and reports."""
        verb = "would upload" if self.dry_run else "uploaded"
        return f"assets in {self.bucket} ({self.region}): {verb} {len(self.uploaded)}, {len(self.unchanged)} unchanged"


def source_dir(template: str, version: str) -> Path:
    """The directory of ``version``'s assets; PreconditionFailed when it does not exist."""
    path = Path(template.format(version=version))
    if not path.is_dir():
        raise PreconditionFailed(f"no static assets for version {version}: {path} is not a directory")
    return path


def scan(root: Path, prefix: str) -> list[AssetFile]:
    """Every file under ``root`` as the object it becomes (key = prefix + relative path)."""
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        rel = path.relative_to(root).as_posix()
        files.append(
            AssetFile(
                key=prefix + rel,
                path=str(path),
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                content_type=mimetypes.guess_type(rel)[0] or "application/octet-stream",
            )
        )
    return files


def publish(
    store: ObjectStore, region: str, bucket: str, files: list[AssetFile], cache_control: str, dry_run: bool = False
) -> BucketPublish:
    """Upload each file whose content differs from the bucket's object; report uploads and skips."""
    result = BucketPublish(region=region, bucket=bucket, dry_run=dry_run)
    for f in files:
        meta = store.head_metadata(bucket, f.key)
        same = (
            meta is not None
            and meta.get(SHA_KEY) == f.sha256
            and meta.get("content-type") == f.content_type
            and meta.get("cache-control") == cache_control
        )
        if same:
            result.unchanged.append(f.key)
            continue
        if not dry_run:
            store.put_bytes(
                bucket,
                f.key,
                Path(f.path).read_bytes(),
                {SHA_KEY: f.sha256},
                content_type=f.content_type,
                cache_control=cache_control,
            )
        result.uploaded.append(f.key)
    return result


def changed_paths(results: list[BucketPublish]) -> list[str]:
    """The CDN paths to invalidate: every key uploaded to any bucket, as /key."""
    return sorted({"/" + key for r in results for key in r.uploaded})
