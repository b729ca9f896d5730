"""JWT verification and development tokens (pure, no I/O beyond temporary key files)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.auth import (
    AuthError,
    Verifier,
    http_auth_error,
    issue_token,
    seconds_until_expiry,
)
from service.settings import Settings

SECRET = "s" * 40
OTHER_SECRET = "o" * 40


@dataclasses.dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def _pems(private_key: Any) -> KeyPair:
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private_pem, public_pem)


@pytest.fixture(scope="module")
def rsa_keys() -> KeyPair:
    return _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> KeyPair:
    return _pems(ec.generate_private_key(ec.SECP256R1()))


def hs_settings(**overrides: Any) -> Settings:
    return dataclasses.replace(
        Settings(jwt_secret=SECRET, jwt_algorithms=("HS256",), jwt_leeway_s=30.0), **overrides
    )


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iat": now, "nbf": now, "exp": now + 600}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def hs_token(secret: str = SECRET, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), secret, algorithm="HS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: object) -> str:
    return b64url(json.dumps(value).encode())


def reason_of(verifier: Verifier, token: str) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    return info.value.reason


# --- valid tokens ---------------------------------------------------------------------------


def test_valid_hs256_token_returns_claims() -> None:
    verifier = Verifier(hs_settings())
    assert verifier.enabled
    got = verifier.verify(hs_token(name="Alice"))
    assert got["sub"] == "alice" and got["name"] == "Alice"


@pytest.mark.parametrize("as_path", [False, True], ids=["pem", "path"])
def test_valid_rs256_token(rsa_keys: KeyPair, tmp_path: Path, as_path: bool) -> None:
    public = rsa_keys.public_pem
    if as_path:
        path = tmp_path / "public.pem"
        path.write_text(public)
        public = str(path)
    verifier = Verifier(Settings(jwt_public_key=public, jwt_algorithms=("RS256",)))
    token = jwt.encode(claims(), rsa_keys.private_pem, algorithm="RS256")
    assert verifier.verify(token)["sub"] == "alice"


@pytest.mark.parametrize("as_path", [False, True], ids=["pem", "path"])
def test_valid_es256_token(ec_keys: KeyPair, tmp_path: Path, as_path: bool) -> None:
    public = ec_keys.public_pem
    if as_path:
        path = tmp_path / "public.pem"
        path.write_text(public)
        public = str(path)
    verifier = Verifier(Settings(jwt_public_key=public, jwt_algorithms=("ES256",)))
    token = jwt.encode(claims(), ec_keys.private_pem, algorithm="ES256")
    assert verifier.verify(token)["sub"] == "alice"


def test_public_key_with_escaped_newlines(rsa_keys: KeyPair) -> None:
    escaped = rsa_keys.public_pem.strip().replace("\n", "\\n")
    verifier = Verifier(Settings(jwt_public_key=escaped, jwt_algorithms=("RS256",)))
    token = jwt.encode(claims(), rsa_keys.private_pem, algorithm="RS256")
    assert verifier.verify(token)["sub"] == "alice"


def test_hs_and_rs_allowed_together(rsa_keys: KeyPair) -> None:
    verifier = Verifier(
        Settings(
            jwt_secret=SECRET, jwt_public_key=rsa_keys.public_pem, jwt_algorithms=("HS256", "RS256")
        )
    )
    assert verifier.verify(hs_token())["sub"] == "alice"
    assert verifier.verify(jwt.encode(claims(), rsa_keys.private_pem, "RS256"))["sub"] == "alice"


# --- rejected tokens ------------------------------------------------------------------------


def test_tampered_payload_is_bad_signature() -> None:
    header, _, signature = hs_token().split(".")
    forged = f"{header}.{b64json(claims(sub='admin'))}.{signature}"
    assert reason_of(Verifier(hs_settings()), forged) == "bad_signature"


def test_other_secret_is_bad_signature() -> None:
    assert reason_of(Verifier(hs_settings()), hs_token(secret=OTHER_SECRET)) == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_rejected(alg: str) -> None:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims())}."
    assert reason_of(Verifier(hs_settings()), token) == "algorithm_not_allowed"


def test_header_without_alg_is_rejected() -> None:
    token = f"{b64json({'typ': 'JWT'})}.{b64json(claims())}.c2ln"
    assert reason_of(Verifier(hs_settings()), token) == "algorithm_not_allowed"


def _hs256_signed_with(key: bytes, payload: dict[str, Any]) -> str:
    signing_input = f"{b64json({'alg': 'HS256', 'typ': 'JWT'})}.{b64json(payload)}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_rs_to_hs_confusion_rejected_when_only_rs_allowed(rsa_keys: KeyPair) -> None:
    token = _hs256_signed_with(rsa_keys.public_pem.encode(), claims())
    verifier = Verifier(Settings(jwt_public_key=rsa_keys.public_pem, jwt_algorithms=("RS256",)))
    assert reason_of(verifier, token) == "algorithm_not_allowed"


def test_rs_to_hs_confusion_rejected_when_both_allowed(rsa_keys: KeyPair) -> None:
    token = _hs256_signed_with(rsa_keys.public_pem.encode(), claims())
    verifier = Verifier(
        Settings(
            jwt_secret=SECRET, jwt_public_key=rsa_keys.public_pem, jwt_algorithms=("HS256", "RS256")
        )
    )
    assert reason_of(verifier, token) == "bad_signature"


def test_rs_token_rejected_when_only_hs_allowed(rsa_keys: KeyPair) -> None:
    token = jwt.encode(claims(), rsa_keys.private_pem, algorithm="RS256")
    assert reason_of(Verifier(hs_settings()), token) == "algorithm_not_allowed"


def test_expired_beyond_leeway() -> None:
    now = int(time.time())
    token = hs_token(iat=now - 1000, nbf=now - 1000, exp=now - 100)
    assert reason_of(Verifier(hs_settings()), token) == "expired"


def test_expired_within_leeway_is_accepted() -> None:
    now = int(time.time())
    token = hs_token(iat=now - 1000, nbf=now - 1000, exp=now - 10)
    assert Verifier(hs_settings()).verify(token)["sub"] == "alice"


def test_zero_leeway_rejects_just_expired() -> None:
    token = hs_token(exp=int(time.time()) - 10)
    assert reason_of(Verifier(hs_settings(jwt_leeway_s=0.0)), token) == "expired"


def test_token_without_exp_is_accepted() -> None:
    assert Verifier(hs_settings()).verify(hs_token(exp=None))["sub"] == "alice"


def test_nbf_in_future_is_not_yet_valid() -> None:
    assert reason_of(Verifier(hs_settings()), hs_token(nbf=int(time.time()) + 300)) == (
        "not_yet_valid"
    )


def test_iat_in_future_is_not_yet_valid() -> None:
    token = hs_token(iat=int(time.time()) + 300, nbf=None)
    assert reason_of(Verifier(hs_settings()), token) == "not_yet_valid"


def test_nbf_within_leeway_is_accepted() -> None:
    token = hs_token(nbf=int(time.time()) + 10, iat=None)
    assert Verifier(hs_settings()).verify(token)["sub"] == "alice"


def test_audience() -> None:
    verifier = Verifier(hs_settings(jwt_audience="api"))
    assert verifier.verify(hs_token(aud="api"))["aud"] == "api"
    assert verifier.verify(hs_token(aud=["other", "api"]))["sub"] == "alice"
    assert reason_of(verifier, hs_token(aud="other")) == "wrong_audience"
    assert reason_of(verifier, hs_token()) == "missing_claim"


def test_audience_not_checked_when_not_configured() -> None:
    assert Verifier(hs_settings()).verify(hs_token(aud="anything"))["aud"] == "anything"


def test_issuer() -> None:
    verifier = Verifier(hs_settings(jwt_issuer="https://id.example"))
    assert verifier.verify(hs_token(iss="https://id.example"))["sub"] == "alice"
    assert reason_of(verifier, hs_token(iss="https://evil.example")) == "wrong_issuer"
    assert reason_of(verifier, hs_token()) == "missing_claim"


@pytest.mark.parametrize("sub", [None, "", "   ", 42, ["alice"]], ids=repr)
def test_sub_must_be_a_non_empty_string(sub: object) -> None:
    payload = claims()
    if sub is None:
        del payload["sub"]
    else:
        payload["sub"] = sub
    token = jwt.encode(payload, SECRET, algorithm="HS256")
    assert reason_of(Verifier(hs_settings()), token) == "missing_sub"


@pytest.mark.parametrize("token", ["garbage", "a.b", "a.b.c", "a.b.c.d", "!!!.###.$$$"])
def test_malformed_tokens(token: str) -> None:
    assert reason_of(Verifier(hs_settings()), token) == "malformed"


def test_signature_is_checked_before_the_payload_is_parsed() -> None:
    header = b64json({"alg": "HS256"})
    verifier = Verifier(hs_settings())
    assert reason_of(verifier, f"{header}.not-json.c2ln") == "bad_signature"
    assert reason_of(verifier, f"{header}.{b64json([1, 2])}.c2ln") == "bad_signature"


def _signed_raw_payload(payload_segment: str) -> str:
    signing_input = f"{b64json({'alg': 'HS256'})}.{payload_segment}"
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def test_signed_but_malformed_payload() -> None:
    verifier = Verifier(hs_settings())
    assert reason_of(verifier, _signed_raw_payload(b64url(b"not json"))) == "malformed"
    assert reason_of(verifier, _signed_raw_payload(b64json([1, 2]))) == "malformed"


def test_malformed_tokens_are_malformed_not_signature_errors() -> None:
    verifier = Verifier(hs_settings())
    assert reason_of(verifier, "garbage") == "malformed"
    assert reason_of(verifier, "a.b") == "malformed"
    # Correctly signed, but exp is not a number.
    assert reason_of(verifier, hs_token(exp="tomorrow")) == "malformed"


def test_alg_in_message_is_truncated() -> None:
    token = f"{b64json({'alg': 'X' * 500})}.{b64json(claims())}.c2ln"
    with pytest.raises(AuthError) as info:
        Verifier(hs_settings()).verify(token)
    assert info.value.reason == "algorithm_not_allowed"
    assert len(str(info.value)) < 100


# --- Authorization header -------------------------------------------------------------------


def test_from_authorization() -> None:
    verifier = Verifier(hs_settings())
    token = hs_token()
    assert verifier.from_authorization(None) is None
    assert verifier.from_authorization(f"Bearer {token}")["sub"] == "alice"  # type: ignore[index]
    assert verifier.from_authorization(f"bEaReR   {token}  ")["sub"] == "alice"  # type: ignore[index]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer ", "malformed"),
        ("Basic xyz", "malformed"),
        ("Token abc.def.ghi", "malformed"),
        ("Bearer a.b", "malformed"),
        ("Bearer garbage", "malformed"),
        ("Bearer two tokens", "malformed"),
    ],
)
def test_from_authorization_bad_shapes(header: str, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        Verifier(hs_settings()).from_authorization(header)
    assert info.value.reason == reason


def test_bearer_shape_message() -> None:
    with pytest.raises(AuthError, match="Bearer <token>"):
        Verifier(hs_settings()).from_authorization("Basic xyz")


# --- WebSocket connection_init payload ------------------------------------------------------


@pytest.mark.parametrize(
    "payload_of",
    [
        lambda t: {"Authorization": f"Bearer {t}"},
        lambda t: {"authorization": f"Bearer {t}"},
        lambda t: {"authToken": t},
        lambda t: {"authToken": f"Bearer {t}"},
        lambda t: {"token": t},
        lambda t: {"headers": {"Authorization": f"Bearer {t}"}},
        lambda t: {"headers": {"authorization": f"Bearer {t}"}},
        lambda t: {"authToken": None, "token": t},
    ],
    ids=[
        "Authorization",
        "authorization",
        "authToken",
        "authToken-bearer",
        "token",
        "headers.Authorization",
        "headers.authorization",
        "null-skipped",
    ],
)
def test_from_connection_params_accepted_keys(payload_of: Any) -> None:
    got = Verifier(hs_settings()).from_connection_params(payload_of(hs_token()))
    assert got is not None and got["sub"] == "alice"


@pytest.mark.parametrize(
    "payload",
    [None, {}, {"other": "x"}, {"authToken": None}, {"headers": None}, {"headers": {}}],
    ids=repr,
)
def test_from_connection_params_anonymous(payload: Any) -> None:
    assert Verifier(hs_settings()).from_connection_params(payload) is None


def test_from_connection_params_order() -> None:
    verifier = Verifier(hs_settings())
    good, bad = hs_token(), hs_token(secret=OTHER_SECRET)
    assert verifier.from_connection_params({"Authorization": f"Bearer {good}", "token": bad})
    with pytest.raises(AuthError):
        verifier.from_connection_params({"authToken": bad, "token": good})
    with pytest.raises(AuthError):
        verifier.from_connection_params(
            {"token": bad, "headers": {"Authorization": f"Bearer {good}"}}
        )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"Authorization": "Basic xyz"}, "malformed"),
        ({"Authorization": 42}, "malformed"),
        ({"authToken": ""}, "malformed"),
        ({"authToken": "Bearer "}, "malformed"),
        ({"token": ["a"]}, "malformed"),
        ({"token": "garbage"}, "malformed"),
        ({"headers": "Authorization: Bearer x"}, "malformed"),
        ({"headers": {"Authorization": "x"}}, "malformed"),
        (["not", "an", "object"], "malformed"),
    ],
    ids=repr,
)
def test_from_connection_params_bad_values(payload: Any, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        Verifier(hs_settings()).from_connection_params(payload)
    assert info.value.reason == reason


def test_from_connection_params_bad_signature() -> None:
    with pytest.raises(AuthError) as info:
        Verifier(hs_settings()).from_connection_params({"token": hs_token(secret=OTHER_SECRET)})
    assert info.value.reason == "bad_signature"


# --- disabled auth --------------------------------------------------------------------------


def test_disabled_verifier_is_anonymous_but_rejects_presented_tokens() -> None:
    verifier = Verifier(Settings())
    assert not verifier.enabled
    assert verifier.from_authorization(None) is None
    assert verifier.from_connection_params({}) is None
    with pytest.raises(AuthError, match="not configured") as info:
        verifier.from_authorization(f"Bearer {hs_token()}")
    assert info.value.reason == "invalid"
    with pytest.raises(AuthError, match="not configured"):
        verifier.from_connection_params({"authToken": hs_token()})


# --- configuration errors -------------------------------------------------------------------


def test_configuration_errors(rsa_keys: KeyPair, ec_keys: KeyPair, tmp_path: Path) -> None:
    rs = rsa_keys.public_pem
    cases: list[tuple[Settings, str]] = [
        (hs_settings(jwt_algorithms=()), "empty"),
        (hs_settings(jwt_algorithms=("none",)), "'none'"),
        (hs_settings(jwt_algorithms=("HS256", "none")), "'none'"),
        (Settings(jwt_algorithms=("none",)), "'none'"),
        (hs_settings(jwt_algorithms=("HS999",)), "unknown algorithm"),
        (Settings(jwt_public_key=rs, jwt_algorithms=("HS256", "RS256")), "JWT_SECRET is unset"),
        (hs_settings(jwt_algorithms=("HS256", "RS256")), "JWT_PUBLIC_KEY is unset"),
        (hs_settings(jwt_algorithms=("RS256",), jwt_public_key=rs), "allows no HS"),
        (hs_settings(jwt_public_key=rs), "only HS"),
        (hs_settings(jwt_secret="short"), "too weak"),
        (hs_settings(jwt_secret=rs), "does not suit HS256"),
        (Settings(jwt_public_key=ec_keys.public_pem, jwt_algorithms=("RS256",)), "RS256"),
        (Settings(jwt_public_key=ec_keys.public_pem, jwt_algorithms=("ES384",)), "ES384"),
        (Settings(jwt_public_key=str(tmp_path / "missing.pem"), jwt_algorithms=("RS256",)), "file"),
        (
            Settings(jwt_public_key="-----BEGIN PUBLIC KEY-----\nxx", jwt_algorithms=("RS256",)),
            "PEM",
        ),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            Verifier(settings)


def test_weak_rsa_key_is_refused() -> None:
    weak = _pems(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ValueError, match="too weak"):
        Verifier(Settings(jwt_public_key=weak.public_pem, jwt_algorithms=("RS256",)))


# --- HTTP answer and expiry -----------------------------------------------------------------


def test_http_auth_error() -> None:
    err = http_auth_error(AuthError("expired", "the token has expired"))
    assert err.status == 401
    assert err.code == "UNAUTHENTICATED"
    assert err.message == "Invalid token: the token has expired"
    assert err.headers == (
        (
            "www-authenticate",
            'Bearer error="invalid_token", '
            'error_description="Invalid token: the token has expired"',
        ),
    )


def test_http_auth_error_sanitizes_the_challenge() -> None:
    err = http_auth_error(AuthError("invalid", 'say "hi"\\ \r\nX-Evil: 1 \u00e9'))
    (name, value), *_ = err.headers
    assert name == "www-authenticate"
    description = value.split('error_description="', 1)[1][:-1]
    assert '"' not in description and "\\" not in description
    assert all(" " <= ch <= "~" for ch in value)


def test_http_auth_error_names_each_reason() -> None:
    verifier = Verifier(hs_settings(jwt_audience="api"))
    with pytest.raises(AuthError) as info:
        verifier.verify(hs_token(aud="other"))
    assert "wrong audience" in http_auth_error(info.value).message
    with pytest.raises(AuthError) as info:
        verifier.verify(hs_token(secret=OTHER_SECRET, aud="api"))
    assert "bad signature" in http_auth_error(info.value).message


def test_seconds_until_expiry() -> None:
    assert seconds_until_expiry({"exp": 1000}, 900.0) == 100.0
    assert seconds_until_expiry({"exp": 1000.5}, 1000.0) == 0.5
    assert seconds_until_expiry({"exp": 900}, 1000.0) == -100.0
    assert seconds_until_expiry({}, 1000.0) is None
    assert seconds_until_expiry({"exp": "soon"}, 1000.0) is None
    assert seconds_until_expiry({"exp": True}, 1000.0) is None


# --- development tokens ---------------------------------------------------------------------


def test_issue_token_round_trip_hs() -> None:
    settings = hs_settings(
        jwt_secret="k" * 48, jwt_algorithms=("HS384", "HS256"), jwt_audience="api", jwt_issuer="dev"
    )
    token = issue_token(settings, sub="alice", name="Alice", ttl_s=60, extra={"roles": ["admin"]})
    assert jwt.get_unverified_header(token)["alg"] == "HS384"
    got = Verifier(settings).verify(token)
    assert got["sub"] == "alice" and got["name"] == "Alice" and got["roles"] == ["admin"]
    assert got["aud"] == "api" and got["iss"] == "dev"
    assert got["exp"] - got["iat"] == 60 and got["nbf"] == got["iat"]
    assert 0 < seconds_until_expiry(got, time.time()) <= 60  # type: ignore[operator]


def test_issue_token_with_now_in_the_past_is_expired() -> None:
    token = issue_token(hs_settings(), sub="alice", ttl_s=60, now=time.time() - 3600)
    assert reason_of(Verifier(hs_settings()), token) == "expired"


def test_issue_token_rs256_with_argument_and_env(
    rsa_keys: KeyPair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(jwt_public_key=rsa_keys.public_pem, jwt_algorithms=("RS256",))
    token = issue_token(settings, sub="bob", private_key=rsa_keys.private_pem)
    assert Verifier(settings).verify(token)["sub"] == "bob"
    path = tmp_path / "private.pem"
    path.write_text(rsa_keys.private_pem)
    monkeypatch.setenv("JWT_PRIVATE_KEY", str(path))
    token = issue_token(settings, sub="carol")
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert Verifier(settings).verify(token)["sub"] == "carol"


def test_issue_token_es256(ec_keys: KeyPair) -> None:
    settings = Settings(jwt_public_key=ec_keys.public_pem, jwt_algorithms=("ES256",))
    token = issue_token(settings, sub="dave", algorithm="ES256", private_key=ec_keys.private_pem)
    assert Verifier(settings).verify(token)["sub"] == "dave"


def test_issue_token_errors(monkeypatch: pytest.MonkeyPatch, rsa_keys: KeyPair) -> None:
    monkeypatch.delenv("JWT_PRIVATE_KEY", raising=False)
    with pytest.raises(ValueError, match="set JWT_SECRET to issue development tokens"):
        issue_token(Settings(), sub="alice")
    with pytest.raises(ValueError, match="not in JWT_ALGORITHMS"):
        issue_token(hs_settings(), sub="alice", algorithm="HS512")
    rs = Settings(jwt_public_key=rsa_keys.public_pem, jwt_algorithms=("RS256",))
    with pytest.raises(ValueError, match="JWT_PRIVATE_KEY"):
        issue_token(rs, sub="alice", algorithm="RS256")
    with pytest.raises(ValueError, match="set JWT_SECRET"):
        issue_token(rs, sub="alice")
    with pytest.raises(ValueError, match="non-empty"):
        issue_token(hs_settings(), sub="")
    with pytest.raises(ValueError, match="positive"):
        issue_token(hs_settings(), sub="alice", ttl_s=0)
    with pytest.raises(ValueError, match="too weak"):
        issue_token(hs_settings(jwt_secret="short"), sub="alice")
    with pytest.raises(ValueError, match="'none'"):
        issue_token(hs_settings(jwt_algorithms=("none",)), sub="alice", algorithm="none")
