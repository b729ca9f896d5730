"""CORS on the GraphQL path (the Fetch standard's CORS protocol), for pages on other origins.

Off unless ``CORS_ALLOW_ORIGINS`` lists origins (comma-separated, each ``scheme://host[:port]``,
matched exactly: an origin that is not listed never gets CORS headers, and no request's origin is
ever echoed unless it is listed). ``*`` allows every origin with the literal
``Access-Control-Allow-Origin: *``, which browsers never combine with credentials, so ``*`` with
``CORS_ALLOW_CREDENTIALS=true`` is refused at start.

- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) from a listed
  origin gets ``204`` with ``Access-Control-Allow-Origin``, ``-Allow-Methods: GET, POST``,
  ``-Allow-Headers`` (``Authorization``, ``Content-Type``, ``Accept``, ``X-Request-ID``),
  ``-Max-Age: CORS_MAX_AGE_S`` and, with ``CORS_ALLOW_CREDENTIALS``, ``-Allow-Credentials:
  true``. The browser compares the method and headers it asked for with these lists. A
  preflight from any other origin is handled as before (405 from the GraphQL core), without
  CORS headers.
- Every other response to a listed origin gets ``Access-Control-Allow-Origin`` (and
  ``-Allow-Credentials``), and ``Access-Control-Expose-Headers`` naming ``X-Request-ID``,
  ``Retry-After`` and ``WWW-Authenticate``.
- Responses on the path carry ``Vary: Origin`` whenever exact origins are configured, listed
  origin or not, so caches keep the variants apart.

WebSockets are not subject to CORS (browsers send ``Origin`` but do not enforce anything); this
server's WebSocket authentication uses tokens in ``connection_init``, not cookies.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Iterable

from service.engine.http import HTTPRequest, HTTPResponse
from service.settings import Settings

ALLOW_METHODS = "GET, POST"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, X-Request-ID"
EXPOSE_HEADERS = "X-Request-ID, Retry-After, WWW-Authenticate"
_ORIGIN = re.compile(r"^([a-z][a-z0-9+.-]*)://(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::([0-9]{1,5}))?/?$")
_DEFAULT_PORTS = {"http": "80", "https": "443"}

Route = Callable[[HTTPRequest], HTTPResponse | Awaitable[HTTPResponse]]


def normalize_origin(value: str) -> str:
    """An origin as browsers serialize it: lower-case scheme and host, no default port, no
    trailing slash. Raises ``ValueError`` for anything that is not ``scheme://host[:port]``
    (a path, a query, credentials, ``null``)."""
    match = _ORIGIN.match(value.strip().lower())
    if match is None:
        raise ValueError(f"not an origin (scheme://host[:port]): {value!r}")
    scheme, host, port = match.groups()
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError(f"not an origin (port out of range): {value!r}")
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"


class CORSPolicy:
    """Which origins may read this server's answers, and the headers that tell browsers so.

    ``path``: the GraphQL path; CORS applies to it and to the paths under it, nothing else.
    """

    __slots__ = ("any_origin", "credentials", "origins", "path", "prefix", "preflight_headers")

    def __init__(
        self,
        origins: Iterable[str],
        *,
        allow_credentials: bool = False,
        max_age_s: int = 600,
        path: str = "/graphql",
    ) -> None:
        listed = [origin.strip() for origin in origins if origin.strip()]
        self.any_origin = "*" in listed
        if self.any_origin and allow_credentials:
            raise ValueError(
                "CORS_ALLOW_ORIGINS='*' cannot be combined with CORS_ALLOW_CREDENTIALS=true: "
                "list the origins"
            )
        self.origins = frozenset(normalize_origin(o) for o in listed if o != "*")
        self.credentials = allow_credentials
        if max_age_s < 0:
            raise ValueError(f"CORS_MAX_AGE_S must not be negative: {max_age_s}")
        self.path = path
        self.prefix = path.rstrip("/") + "/"
        self.preflight_headers = [
            ("access-control-allow-methods", ALLOW_METHODS),
            ("access-control-allow-headers", ALLOW_HEADERS),
            ("access-control-max-age", str(max_age_s)),
        ]

    @classmethod
    def from_settings(cls, settings: Settings, path: str = "/graphql") -> CORSPolicy | None:
        """The policy ``CORS_*`` describe, or ``None`` when no origin is listed (CORS off)."""
        if not any(o.strip() for o in settings.cors_allow_origins):
            return None
        return cls(
            settings.cors_allow_origins,
            allow_credentials=settings.cors_allow_credentials,
            max_age_s=settings.cors_max_age_s,
            path=path,
        )

    # --- decisions (pure) ----------------------------------------------------------------------
    def applies(self, path: str) -> bool:
        return path == self.path or path.startswith(self.prefix)

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    def response_headers(self, origin: str | None) -> list[tuple[str, str]]:
        """CORS headers for an answer (not a preflight) to a request from ``origin``."""
        if self.any_origin:
            return [
                ("access-control-allow-origin", "*"),
                ("access-control-expose-headers", EXPOSE_HEADERS),
            ]
        if origin is None or origin not in self.origins:
            return [("vary", "Origin")]
        headers = [("vary", "Origin"), ("access-control-allow-origin", origin)]
        if self.credentials:
            headers.append(("access-control-allow-credentials", "true"))
        headers.append(("access-control-expose-headers", EXPOSE_HEADERS))
        return headers

    def preflight(self, request: HTTPRequest) -> HTTPResponse | None:
        """The answer to a CORS preflight from an allowed origin; ``None`` for any other
        request (not a preflight, or an origin that is not allowed)."""
        if request.method != "OPTIONS":
            return None
        headers = request.headers
        origin = headers.get("origin")
        if "access-control-request-method" not in headers or not self.allowed(origin):
            return None
        if self.any_origin:
            answer = [("access-control-allow-origin", "*")]
        else:
            assert origin is not None
            answer = [("vary", "Origin"), ("access-control-allow-origin", origin)]
            if self.credentials:
                answer.append(("access-control-allow-credentials", "true"))
        return HTTPResponse(204, answer + self.preflight_headers, b"")

    # --- applied around the routes -------------------------------------------------------------
    def handle(self, request: HTTPRequest, route: Route) -> HTTPResponse | Awaitable[HTTPResponse]:
        """Answer a preflight, or let ``route`` answer and add the CORS headers."""
        if not self.applies(request.path):
            return route(request)
        preflight = self.preflight(request)
        if preflight is not None:
            return preflight
        extra = self.response_headers(request.headers.get("origin"))
        result = route(request)
        if isinstance(result, HTTPResponse):
            return _with_headers(result, extra)
        return _later(result, extra)


def _with_headers(response: HTTPResponse, extra: list[tuple[str, str]]) -> HTTPResponse:
    # A copy: a handler may answer with a response (or a header list) it shares between requests.
    return dataclasses.replace(response, headers=[*response.headers, *extra])


async def _later(pending: Awaitable[HTTPResponse], extra: list[tuple[str, str]]) -> HTTPResponse:
    return _with_headers(await pending, extra)
