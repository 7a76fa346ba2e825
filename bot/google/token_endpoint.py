"""One form POST to Google's token or revocation endpoint, and what its answer means.

Both endpoints take ``application/x-www-form-urlencoded`` bodies and require client
authentication (RFC 6749 section 2.3.1, RFC 7009 section 2.1). We authenticate with HTTP Basic,
the one method every authorization server MUST support; the id and secret are form-encoded
before they are joined (RFC 6749 appendix B).

    EndpointDown     no usable answer (connection, timeout, 5xx, 429, not a token response):
                     nothing was granted, so the same request may be tried again
     +-- NotSent     the connection failed before the request left
    OAuthRefused     an RFC 6749 section 5.2 error answer; ``code`` is its ``error`` value
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import quote_plus

import aiohttp

CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})
_ERROR_CODE = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}")  # RFC 6749 5.2's charset


class EndpointDown(Exception):
    """No usable answer came; nothing was granted."""


class NotSent(EndpointDown):
    """The connection failed before the request was written."""


class OAuthRefused(Exception):
    """The endpoint answered with an OAuth error (``code``: e.g. ``invalid_grant``)."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"{code} (HTTP {status})")
        self.code = code
        self.status = status

    @property
    def client_fault(self) -> bool:
        """Whether the client itself was refused: the operator's id or secret. RFC 6749 5.2
        gives 401 to ``invalid_client`` only; Google also says ``deleted_client`` so."""
        return self.code in CLIENT_ERRORS or self.status == 401


def basic_auth(client_id: str, client_secret: str) -> str:
    """Return the ``Authorization`` value for client_secret_basic (RFC 6749 2.3.1)."""
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


async def post_form(
    http: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    authorization: str,
    *,
    body_matters: bool = True,
) -> dict[str, Any]:
    """POST ``form`` to ``url``; return the JSON object of a 2xx answer.

    Raise ``NotSent`` or ``EndpointDown`` when no usable answer came (a 2xx without a JSON
    object counts only if ``body_matters``), ``OAuthRefused`` for a 4xx error answer. Never
    put ``form`` (it holds tokens and codes) in an exception."""
    headers = {"Authorization": authorization, "Accept": "application/json"}
    try:
        async with http.post(url, data=form, headers=headers, allow_redirects=False) as r:
            status = r.status
            body = await r.read()
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS: nothing left
        raise NotSent(type(exc).__name__) from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise EndpointDown(type(exc).__name__) from None
    answer = _json_object(body)
    if status >= 500 or status == 429:
        raise EndpointDown(f"HTTP {status}")
    if status >= 400:
        error = answer.get("error") if answer else None
        code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else "unknown"
        raise OAuthRefused(code, status)
    if answer is None and body_matters:
        raise EndpointDown(f"HTTP {status} without a JSON object")
    return answer or {}


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body) if body else {}
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
