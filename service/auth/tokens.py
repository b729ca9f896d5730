"""Development tokens: sign a JWT the configured ``Verifier`` accepts.

For development and tests only (``graphql-service token --sub alice``); production tokens come
from an identity provider. HS* tokens are signed with ``JWT_SECRET``. RS*/PS*/ES*/EdDSA tokens
need the matching private key, passed as ``private_key`` or read from the ``JWT_PRIVATE_KEY``
environment variable (a PEM, inline or as a path). The server itself never reads
``JWT_PRIVATE_KEY``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jwt

from service.auth.verify import algorithm as algorithm_impl
from service.auth.verify import is_symmetric, load_private_key, prepare_key
from service.settings import Settings


def _choose_algorithm(settings: Settings, private_key: str | None) -> str:
    names = tuple(settings.jwt_algorithms)
    if settings.jwt_secret:
        for name in names:
            if name.lower() != "none" and is_symmetric(algorithm_impl(name)):
                return name
    if private_key:
        for name in names:
            if name.lower() != "none" and not is_symmetric(algorithm_impl(name)):
                return name
    raise ValueError(
        "no signing key for JWT_ALGORITHMS "
        f"({', '.join(names) or 'empty'}): set JWT_SECRET to issue development tokens "
        "(or JWT_PRIVATE_KEY with an RS*/PS*/ES*/EdDSA algorithm)"
    )


def issue_token(
    settings: Settings,
    *,
    sub: str,
    name: str | None = None,
    ttl_s: int = 3600,
    algorithm: str | None = None,
    private_key: str | None = None,
    extra: dict[str, Any] | None = None,
    now: float | None = None,
) -> str:
    """A signed JWT for ``sub``, valid for ``ttl_s`` seconds from ``now`` (default: the clock).

    Claims: ``sub``, ``iat``, ``nbf`` (= ``iat``), ``exp``, ``name`` when given, ``aud``/``iss``
    when ``jwt_audience``/``jwt_issuer`` are set, then ``extra`` merged last (it may override).
    ``algorithm`` defaults to the first allowed HS* algorithm when ``jwt_secret`` is set, else
    the first allowed asymmetric one when a private key is available; it must be in
    ``jwt_algorithms``. Raises ``ValueError`` when no suitable signing key is available.
    """
    if not isinstance(sub, str) or not sub.strip():
        raise ValueError("sub must be a non-empty string")
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, not {ttl_s}")
    if private_key is None:
        private_key = os.environ.get("JWT_PRIVATE_KEY") or None
    alg = algorithm or _choose_algorithm(settings, private_key)
    if alg not in settings.jwt_algorithms:
        raise ValueError(
            f"algorithm {alg!r} is not in JWT_ALGORITHMS ({', '.join(settings.jwt_algorithms)}); "
            "the server would reject the token"
        )
    impl = algorithm_impl(alg)
    if is_symmetric(impl):
        if not settings.jwt_secret:
            raise ValueError(f"set JWT_SECRET to issue development {alg} tokens")
        key = prepare_key(alg, impl, settings.jwt_secret, "JWT_SECRET")
    else:
        if not private_key:
            raise ValueError(f"set JWT_PRIVATE_KEY (a PEM or a path) to issue {alg} tokens")
        key = prepare_key(alg, impl, load_private_key(private_key), "JWT_PRIVATE_KEY")
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": iat, "nbf": iat, "exp": iat + int(ttl_s)}
    if name is not None:
        claims["name"] = name
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    claims.update(extra or {})
    return jwt.encode(claims, key, algorithm=alg)
