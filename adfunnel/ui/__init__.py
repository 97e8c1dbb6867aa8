"""The report viewer: one page over the report API, served by the reporter at `/reports/ui`.

The page is static (HTML, a script, a style sheet, all in this package: no CDN, so it works
on a closed network) and reads the reports from the browser, with the same filters and the
same API key as any other client. It holds no data itself, so it needs no key to load.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import orjson

from adfunnel.schema import EVENT_TYPES, FUNNEL_STAGES, SOURCES

# What the browser may do with the page: run its own script, call its own origin, nothing
# else (no inline script, no other host).
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The assets change with the package, not with time: revalidate, never serve stale.
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# The page's script reads the schema's sources, stages and event types from here, so the
# filters offer exactly what the reports accept.
_SCHEMA_MARK = b"{{schema}}"


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the viewer, ready to send."""

    body: bytes
    media_type: str


def _schema_json() -> bytes:
    schema = {"sources": SOURCES, "stages": FUNNEL_STAGES, "eventTypes": EVENT_TYPES}
    # Inside a <script type="application/json"> element only "</" could end it early.
    return orjson.dumps(schema).replace(b"</", b"<\\/")


FILES = ("index.html", "app.js", "app.css")


def asset(name: str) -> Asset | None:
    """The viewer's file `name` (one of `FILES`), or None for any other name."""
    return _load(name) if name in FILES else None


@cache
def _load(name: str) -> Asset:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    if name == "index.html":
        body = body.replace(_SCHEMA_MARK, _schema_json())
    return Asset(body, _MEDIA_TYPES[name[name.rfind(".") :]])
