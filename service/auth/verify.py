"""JWT bearer-token verification for HTTP requests and WebSocket ``connection_init``.

Pure: a token (or an ``Authorization`` header, or a connection_init payload) in, claims or an
``AuthError`` out. Keys are loaded and checked once, when the ``Verifier`` is built, so a
misconfigured server refuses to start instead of failing the first request.

Policy
- The allow-list is ``settings.jwt_algorithms``. ``none`` is never allowed; an unknown name, an
  empty list, or a key that does not suit an allowed algorithm is a ``ValueError`` at startup.
- The key is chosen by the algorithm *family* of the token's ``alg`` header, and only if that
  ``alg`` is in the allow-list: HS* tokens are checked with ``jwt_secret`` only, RS*/PS*/ES*/
  EdDSA tokens with ``jwt_public_key`` only. The public key's PEM bytes can never act as an
  HMAC secret (no RS-to-HS algorithm confusion), and pyjwt is always told the single algorithm
  that was chosen.
- ``exp``, ``nbf`` and ``iat`` are checked with ``jwt_leeway_s`` of clock skew. ``exp`` is not
  required (see ``seconds_until_expiry``). ``aud`` is checked only when ``jwt_audience`` is set,
  ``iss`` only when ``jwt_issuer`` is set; then the claim is required. ``sub`` must be a
  non-empty string.
- Key strength follows RFC 7518: an HMAC secret at least as long as the hash output (32 bytes for
  HS256), RSA keys of at least 2048 bits; shorter keys are refused at startup.
- Auth is *enabled* when a secret or a public key is configured. When it is not, requests
  without credentials are anonymous and any presented token is rejected with reason
  ``"invalid"`` ("authentication is not configured on this server"), so a client or deployment
  that expects auth sees the misconfiguration instead of silently running anonymous.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import jwt
from jwt.algorithms import Algorithm, HMACAlgorithm, get_default_algorithms

from service.protocols.codes import ErrorCode
from service.protocols.http import HTTPError
from service.settings import Settings

if TYPE_CHECKING:
    from jwt.types import Options

AuthReason = Literal[
    "expired",
    "not_yet_valid",
    "bad_signature",
    "wrong_audience",
    "wrong_issuer",
    "missing_sub",
    "malformed",
    "algorithm_not_allowed",
    "missing_claim",
    "invalid",
]

_BEARER_SHAPE = "Authorization header must be 'Bearer <token>'"


class AuthError(Exception):
    """The client's credentials are bad: answer 401 (HTTP) or refuse the connection (WebSocket).

    ``reason`` is a short machine-readable reason (see ``AuthReason``); ``str(exc)`` and
    ``message`` are the human explanation.
    """

    status = 401

    def __init__(self, reason: AuthReason, message: str) -> None:
        super().__init__(message)
        self.reason: AuthReason = reason
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.message!r})"


# --- keys -----------------------------------------------------------------------------------


def read_pem(value: str, what: str) -> bytes:
    """A PEM given inline (contains ``-----BEGIN``) or as a path to a PEM file.

    Inline PEMs with literal ``\\n`` sequences (common in env files) are unescaped.
    ``what`` names the setting in error messages. Raises ``ValueError``.
    """
    text = value.strip()
    if "-----BEGIN" not in text:
        try:
            with open(os.path.expanduser(text), "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(
                f"{what} is neither a PEM ('-----BEGIN ...') nor a readable file: {exc}"
            ) from None
        if b"-----BEGIN" not in data:
            raise ValueError(f"{what}: file {text!r} does not contain a PEM")
        return data
    if "\\n" in text and "\n" not in text:
        text = text.replace("\\n", "\n")
    return text.encode()


def load_public_key(value: str) -> Any:
    """A public key object from a PEM public key or certificate (inline or a path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    data = read_pem(value, "JWT_PUBLIC_KEY")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"JWT_PUBLIC_KEY is not a valid PEM public key: {exc}") from None


def load_private_key(value: str, what: str = "JWT_PRIVATE_KEY") -> Any:
    """A private key object from an unencrypted PEM private key (inline or a path)."""
    from cryptography.hazmat.primitives import serialization

    data = read_pem(value, what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what} is not an unencrypted PEM private key: {exc}") from None


def algorithm(name: str) -> Algorithm:
    """pyjwt's implementation of ``name``; ``ValueError`` for ``none`` or an unknown name."""
    if name.lower() == "none":
        raise ValueError("JWT_ALGORITHMS must not contain 'none' (unsigned tokens)")
    impl = get_default_algorithms().get(name)
    if impl is None:
        known = ", ".join(n for n in get_default_algorithms() if n != "none")
        raise ValueError(f"JWT_ALGORITHMS: unknown algorithm {name!r} (known: {known})")
    return impl


def is_symmetric(impl: Algorithm) -> bool:
    """True for the HS* family (keyed with ``jwt_secret``)."""
    return isinstance(impl, HMACAlgorithm)


def prepare_key(name: str, impl: Algorithm, key: Any, what: str) -> Any:
    """Check that ``key`` suits algorithm ``name`` and is strong enough; ``ValueError`` if not."""
    try:
        prepared = impl.prepare_key(key)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{what} does not suit {name}: {exc}") from None
    weakness = impl.check_key_length(prepared)
    if weakness:
        hint = ""
        if is_symmetric(impl):
            hint = " Generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
        raise ValueError(f"{what} is too weak for {name}: {weakness}{hint}")
    return prepared


# --- verification ---------------------------------------------------------------------------


def _describe_alg(alg: object) -> str:
    text = repr(alg)
    return text if len(text) <= 24 else text[:21] + "..."


class Verifier:
    """Verifies bearer JWTs against the keys and rules in ``Settings`` (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        names = tuple(settings.jwt_algorithms)
        if not names:
            raise ValueError("JWT_ALGORITHMS is empty: allow at least one algorithm, e.g. HS256")
        impls = {name: algorithm(name) for name in names}
        self._audience = settings.jwt_audience or None
        self._issuer = settings.jwt_issuer or None
        self._leeway_s = float(settings.jwt_leeway_s)
        self._allowed = names
        self._keys: dict[str, Any] = {}
        # ``sub`` is checked below (pyjwt checks it only in newer versions).
        self._options: Options = {
            "verify_signature": True,
            "verify_sub": False,
            "verify_aud": self._audience is not None,
            "verify_iss": self._issuer is not None,
            "enforce_minimum_key_length": True,
        }
        self._enabled = bool(settings.jwt_secret or settings.jwt_public_key)
        if not self._enabled:
            return
        symmetric = [n for n, impl in impls.items() if is_symmetric(impl)]
        asymmetric = [n for n, impl in impls.items() if not is_symmetric(impl)]
        if symmetric and not settings.jwt_secret:
            raise ValueError(
                f"JWT_ALGORITHMS allows {', '.join(symmetric)} but JWT_SECRET is unset"
            )
        if asymmetric and not settings.jwt_public_key:
            raise ValueError(
                f"JWT_ALGORITHMS allows {', '.join(asymmetric)} but JWT_PUBLIC_KEY is unset"
            )
        if settings.jwt_secret and not symmetric:
            raise ValueError("JWT_SECRET is set but JWT_ALGORITHMS allows no HS* algorithm")
        if settings.jwt_public_key and not asymmetric:
            raise ValueError("JWT_PUBLIC_KEY is set but JWT_ALGORITHMS allows only HS* algorithms")
        public_key = load_public_key(settings.jwt_public_key) if asymmetric else None
        for name, impl in impls.items():
            if is_symmetric(impl):
                self._keys[name] = prepare_key(name, impl, settings.jwt_secret, "JWT_SECRET")
            else:
                self._keys[name] = prepare_key(name, impl, public_key, "JWT_PUBLIC_KEY")

    @property
    def enabled(self) -> bool:
        """True when a secret or public key is configured (see the module doc when not)."""
        return self._enabled

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid ``token``; raises ``AuthError`` naming what is wrong."""
        if not self._enabled:
            raise AuthError("invalid", "authentication is not configured on this server")
        if not isinstance(token, str) or not token:
            raise AuthError("malformed", "the token is empty")
        if not token.isascii():  # a JWT is base64url segments and dots: ASCII only
            raise AuthError(
                "malformed", "the token is not a well-formed JWT (non-ASCII characters)"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError("malformed", f"the token is not a well-formed JWT ({exc})") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._keys:
            raise AuthError(
                "algorithm_not_allowed",
                f"algorithm {_describe_alg(alg)} is not allowed "
                f"(allowed: {', '.join(self._allowed)})",
            )
        key = self._keys[alg]
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid", "the token is not valid yet (nbf or iat)") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature", "bad signature") from None
        except jwt.InvalidAudienceError:
            raise AuthError(
                "wrong_audience", f"wrong audience (expected {self._audience!r})"
            ) from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong_issuer", f"wrong issuer (expected {self._issuer!r})") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("missing_claim", f"the {exc.claim!r} claim is required") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("algorithm_not_allowed", "algorithm not allowed") from None
        except (jwt.DecodeError, jwt.InvalidIssuedAtError) as exc:
            raise AuthError("malformed", f"the token is not a well-formed JWT ({exc})") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid", f"invalid token ({exc})") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise AuthError("missing_sub", "the 'sub' claim must be a non-empty string")
        return claims

    def from_authorization(self, header: str | None) -> dict[str, Any] | None:
        """Claims from an ``Authorization: Bearer <token>`` header value; ``None`` if absent.

        The scheme is case-insensitive. Any other shape is ``AuthError("malformed")``.
        """
        if header is None:
            return None
        if not isinstance(header, str):
            raise AuthError("malformed", _BEARER_SHAPE)
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or any(c.isspace() for c in token):
            raise AuthError("malformed", _BEARER_SHAPE)
        return self.verify(token)

    def from_connection_params(self, payload: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """Claims from a WebSocket ``connection_init`` payload; ``None`` when it carries none.

        The first present (non-null) key wins, in this order: ``Authorization`` /
        ``authorization`` ("Bearer <token>"), ``authToken``, ``token`` (the raw token; a
        "Bearer " prefix is tolerated), then ``headers.Authorization`` /
        ``headers.authorization`` ("Bearer <token>", Apollo style). A present but bad value is
        an ``AuthError``.
        """
        if payload is None:
            return None
        if not isinstance(payload, Mapping):
            raise AuthError("malformed", "the connection_init payload must be an object")
        for key in ("Authorization", "authorization"):
            value = payload.get(key)
            if value is not None:
                return self.from_authorization(_string(value, key))
        for key in ("authToken", "token"):
            value = payload.get(key)
            if value is not None:
                token = _string(value, key).strip()
                scheme, _, rest = token.partition(" ")
                if scheme.lower() == "bearer":
                    token = rest.strip()
                if not token:
                    raise AuthError("malformed", f"connection parameter {key!r} is empty")
                return self.verify(token)
        headers = payload.get("headers")
        if headers is None:
            return None
        if not isinstance(headers, Mapping):
            raise AuthError("malformed", "connection parameter 'headers' must be an object")
        for key in ("Authorization", "authorization"):
            value = headers.get(key)
            if value is not None:
                return self.from_authorization(_string(value, f"headers.{key}"))
        return None


def _string(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise AuthError("malformed", f"connection parameter {key!r} must be a string")
    return value


# --- adapters' helpers ----------------------------------------------------------------------


def _header_safe(text: str) -> str:
    # RFC 6750 section 3: error_description is %x20-21 / %x23-5B / %x5D-7E.
    out = []
    for ch in text:
        if ch == '"':
            out.append("'")
        elif ch == "\\":
            out.append("/")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)[:200]


def http_auth_error(exc: AuthError) -> HTTPError:
    """The 401 answer for ``exc``, with an RFC 6750 ``WWW-Authenticate`` challenge."""
    message = f"Invalid token: {exc}"
    challenge = f'Bearer error="invalid_token", error_description="{_header_safe(message)}"'
    return HTTPError(
        401, message, headers=(("www-authenticate", challenge),), code=ErrorCode.UNAUTHENTICATED
    )


def seconds_until_expiry(claims: Mapping[str, Any], now: float) -> float | None:
    """Seconds from ``now`` (wall-clock epoch seconds) until ``exp``; ``None`` without ``exp``.

    Negative when already expired. Adapters use it to close a WebSocket when its token expires.
    """
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp) - now
