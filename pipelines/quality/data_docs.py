"""Great Expectations Data Docs that open offline: CDN assets stripped, a local stylesheet, an index without JavaScript.

GE renders each validation server-side, but loads Bootstrap, jQuery, Font Awesome and a tracking image from public
CDNs, and its index builds the list of validations in JavaScript. After every build the site is rewritten: every
script and every external stylesheet or image is removed, status icons become words, and the index is a plain
table of every stored validation (suite, time, status, counts) linking to its page. Pages hold GE's rendering of
results stored with `SUMMARY` format: counts and thresholds, no cell values.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

SITE = Path("uncommitted") / "data_docs" / "local_site"  # GE's default local site, under the GE project root
VALIDATIONS = Path("uncommitted") / "validations"
DOCS_URL_ENV = "PIPELINES_DATA_DOCS_URL"
DEFAULT_DOCS_URL = "http://localhost:3001"  # `make ui` serves the site there (pipelines.quality.docs_server)
MARKER = '<meta name="pipelines-offline" content="1">'
STYLESHEET = "static/styles/offline.css"

_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)
_EXTERNAL_TAG = re.compile(
    r"<(?:link|img|iframe|source)\b[^>]*?(?:href|src)\s*=\s*[\"']?(?:https?:)?//[^>]*>", re.S | re.I
)
_CSS_URL = re.compile(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", re.I)  # a logo in GE's inline styles
_FOOTER = re.compile(r"<footer\b.*?</footer\s*>", re.S | re.I)
_ICONS = (
    (re.compile(r"<i\b[^>]*fa-check-circle[^>]*>\s*</i>", re.I), '<span class="status passed">passed</span>'),
    (re.compile(r"<i\b[^>]*fa-times[^>]*>\s*</i>", re.I), '<span class="status failed">failed</span>'),
    (re.compile(r"<i\b[^>]*fa-exclamation-triangle[^>]*>\s*</i>", re.I), '<span class="status failed">error</span>'),
    (re.compile(r"<i\b[^>]*\bfa[srb]?\b[^>]*>\s*</i>", re.I), ""),  # any other icon font glyph would show as nothing
)

CSS = """/* Data Docs offline (pipelines.quality.data_docs): no web fonts, no CDN assets. */
body { font-family: system-ui, sans-serif; margin: 1.5rem auto; max-width: 72rem; padding: 0 1rem; color: #1d2330; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #c9ced8; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #eef1f6; }
.status { font-weight: 600; }
.status.passed, .passed { color: #17663a; }
.status.failed, .failed { color: #a3151b; }
nav, .navbar, .sticky, .d-none, .d-md-none, button, .btn, form { display: none !important; }
.card, .collapse { display: block; }
img { max-height: 2rem; }
code, pre { background: #f4f5f8; padding: 0 .2rem; }
"""


def site_dir(gx_root: Path) -> Path:
    """The local site of the GE project at `gx_root` (GE puts its project in `gx/` under the folder it is given)."""
    return gx_root / SITE


def served_site(gx_dir: Path) -> Path:
    """The site of the pipeline's GE project (`PipelineStorage.gx_dir`)."""
    return site_dir(gx_dir / "gx")


def docs_base_url(url: str | None = None) -> str:
    """Where the Data Docs site is served: `url` (the storage resource's, a `dg.EnvVar` of $PIPELINES_DATA_DOCS_URL),
    else $PIPELINES_DATA_DOCS_URL, else `make ui`'s local server."""
    return (url or os.environ.get(DOCS_URL_ENV) or DEFAULT_DOCS_URL).rstrip("/")


def page_url(relative: str, base: str | None = None) -> str:
    return f"{docs_base_url(base)}/{relative.lstrip('/')}"


def offline_html(text: str, depth: int) -> str:
    """One GE page without scripts or external assets, with the local stylesheet (idempotent)."""
    if MARKER in text:
        return text
    text = _SCRIPT.sub("", text)
    text = _CSS_URL.sub("none", _EXTERNAL_TAG.sub("", text))
    for pattern, replacement in _ICONS:
        text = pattern.sub(replacement, text)
    text = _FOOTER.sub("<footer><p>Offline copy: no asset is loaded from the internet.</p></footer>", text)
    head = f'{MARKER}<link rel="stylesheet" href="{"../" * depth}{STYLESHEET}">'
    return (
        re.sub(r"</head\s*>", head + "</head>", text, count=1, flags=re.I)
        if re.search(r"</head\s*>", text, re.I)
        else head + text
    )


@dataclass
class Validation:
    page: str  # path of its page under the site
    suite: str
    run_time: str
    success: bool | None
    evaluated: int | None
    failed: int | None


def _validations(gx_root: Path) -> list[Validation]:
    site = site_dir(gx_root)
    out = []
    for page in (site / "validations").rglob("*.html") if (site / "validations").exists() else []:
        relative = page.relative_to(site)
        stored = gx_root / VALIDATIONS / relative.relative_to("validations").with_suffix(".json")
        result: dict = {}
        if stored.exists():
            try:
                result = json.loads(stored.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                result = {}
        stats = result.get("statistics") or {}
        meta = result.get("meta") or {}
        run_time = str((meta.get("run_id") or {}).get("run_time") or relative.parts[-2])
        suite = meta.get("expectation_suite_name") or ".".join(relative.parts[1:-3])
        out.append(
            Validation(
                str(relative),
                suite,
                run_time,
                result.get("success"),
                stats.get("evaluated_expectations"),
                stats.get("unsuccessful_expectations"),
            )
        )
    return sorted(out, key=lambda v: (v.run_time, v.suite), reverse=True)


def index_html(validations: list[Validation]) -> str:
    rows = []
    for v in validations:
        status = "passed" if v.success else ("failed" if v.success is False else "unknown")
        rows.append(
            f'<tr><td>{html.escape(v.run_time)}</td><td><a href="{html.escape(v.page)}">{html.escape(v.suite)}</a></td>'
            f'<td><span class="status {status}">{status}</span></td><td>{"" if v.evaluated is None else v.evaluated}</td>'
            f"<td>{'' if v.failed is None else v.failed}</td></tr>"
        )
    return "\n".join(
        [
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Data Docs: validations</title>',
            f'{MARKER}<link rel="stylesheet" href="{STYLESHEET}"></head><body>',
            "<h1>Great Expectations validations</h1>",
            f"<p>{len(validations)} stored validation results, newest first. Each page shows every expectation with its "
            "threshold and observed counts (no cell values).</p>",
            "<table><thead><tr><th>run time (UTC)</th><th>suite</th><th>status</th><th>expectations</th><th>failed</th></tr></thead><tbody>",
            *rows,
            "</tbody></table></body></html>",
        ]
    )


def make_offline(gx_root: Path) -> None:
    """Rewrite the site GE just built (new pages only; the index every time)."""
    site = site_dir(gx_root)
    if not site.exists():
        return
    stamp = site / STYLESHEET  # written at the end of every rewrite: older pages were rewritten already
    since = stamp.stat().st_mtime_ns if stamp.exists() else 0
    for css in (site / "static").rglob("*.css"):
        text = css.read_text(encoding="utf-8", errors="replace")
        if _CSS_URL.search(text):
            css.write_text(_CSS_URL.sub("none", text), encoding="utf-8")
    for page in site.rglob("*.html"):
        relative = page.relative_to(site)
        if relative == Path("index.html") or page.stat().st_mtime_ns < since:
            continue
        text = page.read_text(encoding="utf-8", errors="replace")
        if MARKER not in text:
            page.write_text(offline_html(text, len(relative.parts) - 1), encoding="utf-8")
    (site / "index.html").write_text(index_html(_validations(gx_root)), encoding="utf-8")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(CSS, encoding="utf-8")
