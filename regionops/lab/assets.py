"""Static assets of the lab's application, one directory per version: ``apps/assets/<version>/``.

The release runbook publishes a version's directory to every region's bucket.  Some
files change with each version (``index.html``, ``app.js`` carry the version) and some
never do (``style.css``, ``img/logo.svg``), so a release shows both uploads and objects
left alone because their content did not change.
"""

from __future__ import annotations

from pathlib import Path

STYLE = "body { font-family: sans-serif; margin: 2rem; }\nh1 { color: #24476b; }\n"
LOGO = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
    '<circle cx="16" cy="16" r="14" fill="#24476b"/></svg>\n'
)


def assets_root(lab_dir: Path) -> Path:
    """Where the lab keeps every version's assets."""
    return lab_dir / "apps" / "assets"


def build_assets(lab_dir: Path, version: str) -> Path:
    """Write version ``version``'s assets (idempotent); return their directory."""
    root = assets_root(lab_dir) / version
    files = {
        "index.html": f"<!doctype html>\n<title>regionops lab app</title>\n<link rel=stylesheet href=style.css>\n"
        f"<h1>regionops lab app {version}</h1>\n<script src=app.js></script>\n",
        "app.js": f"window.APP_VERSION = {version!r};\nconsole.log('regionops lab app', window.APP_VERSION);\n",
        "style.css": STYLE,
        "img/logo.svg": LOGO,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return root
