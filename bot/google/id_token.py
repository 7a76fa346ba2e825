"""The address in an ID token from the code exchange, after checking its claims.

The token came straight from Google's token endpoint over TLS, so its signature need not be
checked (OpenID Connect Core 3.1.3.7, point 6); its claims are, as that section says.
"""

from __future__ import annotations

import base64
import binascii
import json
import time

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
SKEW = 300.0  # seconds of clock difference tolerated


def address_from(id_token: object, client_id: str, now: float | None = None) -> str | None:
    """Return the ``email`` claim of ``id_token`` if its claims hold for ``client_id``."""
    claims = _claims(id_token)
    if claims is None or not _valid(claims, client_id, time.time() if now is None else now):
        return None
    email = claims.get("email")
    return email if isinstance(email, str) and "@" in email else None


def _claims(id_token: object) -> dict[str, object] | None:
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def _valid(claims: dict[str, object], client_id: str, now: float) -> bool:
    # 3.1.3.7 point 2: the issuer is Google's (Google uses both spellings).
    if claims.get("iss") not in GOOGLE_ISSUERS:
        return False
    # Point 3: aud, a string or a list, names us, and no audience we do not trust.
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or set(audiences) != {client_id}:
        return False
    # Points 4 and 5: with several audiences an azp is required; when present, it is us.
    azp = claims.get("azp")
    if (len(audiences) > 1 and azp is None) or (azp is not None and azp != client_id):
        return False
    # Points 9 and 10: not expired, and iat present (both numbers, RFC 7519 NumericDate).
    exp, iat = claims.get("exp"), claims.get("iat")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (exp, iat))
    return numbers and float(exp) > now - SKEW and float(iat) < now + SKEW  # type: ignore[arg-type]
