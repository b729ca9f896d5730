"""Authentication: JWT bearer-token verification and development tokens.

``Verifier`` turns an ``Authorization`` header or a WebSocket ``connection_init`` payload into
claims (or ``None`` for anonymous) and raises ``AuthError`` for bad credentials;
``http_auth_error`` maps that to the 401 answer. ``issue_token`` signs development tokens.
"""

from service.auth.tokens import issue_token
from service.auth.verify import (
    AuthError,
    AuthReason,
    Verifier,
    http_auth_error,
    seconds_until_expiry,
)

__all__ = [
    "AuthError",
    "AuthReason",
    "Verifier",
    "http_auth_error",
    "issue_token",
    "seconds_until_expiry",
]
