"""GraphiQL for browsers on the GraphQL path, from files shipped in this package (no CDN).

A ``GET`` of the GraphQL path whose ``Accept`` prefers ``text/html`` (a browser navigating
there) gets the GraphiQL page; ``GET {path}/assets/<name>`` gets one of its assets. Every other
request is left to the GraphQL core, so the GraphQL-over-HTTP behaviour does not change.

The assets (``service/server/graphiql/``: one script, one stylesheet, a manifest naming them and
the bundled packages' license notices) are built by ``tools/graphiql`` (npm, esbuild, pinned
versions, reproducible) and committed. Their names carry a content hash, so they are served with
``cache-control: public, max-age=31536000, immutable``; the page itself is ``no-cache``.

The page has no inline script or style: its one setting (the GraphQL path) is a data attribute,
which lets the Content-Security-Policy allow only this origin (plus ``ws:``/``wss:`` for
subscriptions and ``data:`` for GraphiQL's inlined fonts and icons). The script sends queries
and mutations over HTTP and subscriptions over WebSocket (``graphql-transport-ws``) to the same
path, with the headers editor's headers as the ``connection_init`` payload, so an
``Authorization: Bearer ...`` header signs in both.
"""

from __future__ import annotations

import functools
import html
import json
from pathlib import Path

from service.engine.http import HTTPRequest, HTTPResponse
from service.protocols.http import accept_entries

#: Where the built assets live (package data of ``service.server``).
ASSET_DIR = Path(__file__).with_name("graphiql")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
IMMUTABLE = "public, max-age=31536000, immutable"
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
_HTML_TYPES = frozenset({"text/html"})
_JSON_TYPES = frozenset({"application/json", "application/graphql-response+json"})
_WILDCARDS = frozenset({"*/*", "application/*"})
_prefers_cache: dict[str, bool] = {}  # verdicts by Accept value (clients send few distinct ones)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>GraphiQL</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{style}">
<script defer src="{script}"></script>
</head>
<body>
<div id="graphiql" data-endpoint="{endpoint}">Loading GraphiQL&hellip;</div>
</body>
</html>
"""


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` value prefers ``text/html`` to the GraphQL response types.

    ``text/html`` must have a positive quality above any explicit ``application/json`` or
    ``application/graphql-response+json`` and at least that of ``*/*``/``application/*``: a
    browser's navigation (``text/html,...,*/*;q=0.8``) does, ``curl`` (``*/*``) and GraphQL
    clients do not.
    """
    if not accept:
        return False
    known = _prefers_cache.get(accept)
    if known is not None:
        return known
    html_q = explicit_q = wildcard_q = 0.0
    for media, q in accept_entries(accept):
        if not 0.0 <= q <= 1.0:  # NaN and out-of-range values count as refusals
            q = 0.0
        if media in _HTML_TYPES:
            html_q = max(html_q, q)
        elif media in _JSON_TYPES:
            explicit_q = max(explicit_q, q)
        elif media in _WILDCARDS:
            wildcard_q = max(wildcard_q, q)
    verdict = html_q > 0.0 and html_q > explicit_q and html_q >= wildcard_q
    if len(_prefers_cache) < 256:
        _prefers_cache[accept] = verdict
    return verdict


@functools.cache
def _load(asset_dir: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    manifest_path = asset_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_bytes())
        files = {name: (asset_dir / name).read_bytes() for name in manifest.values()}
    except (OSError, ValueError) as exc:
        raise RuntimeError(
            f"the GraphiQL assets are missing or broken in {asset_dir} ({exc}); rebuild them "
            "with tools/graphiql (npm ci && npm run build) or set GRAPHIQL=false"
        ) from exc
    return manifest, files


class GraphiQL:
    """Answers browsers on ``path`` with the GraphiQL page and its assets; ``handle`` returns
    ``None`` for every request it does not serve."""

    __slots__ = ("assets", "page", "path", "prefix")

    def __init__(self, path: str = "/graphql", asset_dir: Path = ASSET_DIR) -> None:
        manifest, files = _load(asset_dir)
        self.path = path
        self.prefix = path.rstrip("/") + "/assets/"
        self.assets: dict[str, tuple[str, bytes]] = {
            self.prefix + name: (_CONTENT_TYPES[Path(name).suffix], body)
            for name, body in files.items()
        }
        self.page = _PAGE.format(
            style=html.escape(self.prefix + manifest["style"]),
            script=html.escape(self.prefix + manifest["script"]),
            endpoint=html.escape(path),
        ).encode()

    def handle(self, request: HTTPRequest) -> HTTPResponse | None:
        if request.method != "GET":
            return None
        path = request.path
        if path == self.path:
            if not prefers_html(request.headers.get("accept")):
                return None
            return HTTPResponse(
                200,
                [
                    ("content-type", "text/html; charset=utf-8"),
                    ("cache-control", "no-cache"),
                    ("vary", "Accept"),
                    ("content-security-policy", CONTENT_SECURITY_POLICY),
                    ("x-content-type-options", "nosniff"),
                    ("referrer-policy", "no-referrer"),
                ],
                self.page,
            )
        asset = self.assets.get(path)
        if asset is None:
            return None
        content_type, body = asset
        return HTTPResponse(
            200,
            [
                ("content-type", content_type),
                ("cache-control", IMMUTABLE),
                ("x-content-type-options", "nosniff"),
            ],
            body,
        )
