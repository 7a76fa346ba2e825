"""The Google OAuth client as configured: from the downloaded JSON or from id and secret."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from bot.config import GoogleConfig
from bot.errors import ConfigError

GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
SCOPES = ("openid", "email", GMAIL_SEND)


@dataclass(frozen=True)
class GoogleClient:
    """An OAuth client and the endpoints it talks to."""

    client_id: str
    client_secret: str = field(repr=False)
    auth_uri: str
    token_uri: str
    revoke_uri: str
    api_endpoint: str


def load_client(google: GoogleConfig) -> GoogleClient:
    """Read the client from ``[google]``; the secrets file wins for id, secret and endpoints."""
    client_id, secret = google.client_id, google.client_secret
    auth_uri, token_uri = google.auth_uri, google.token_uri
    if google.client_secrets_file is not None:
        where = f"[google] client_secrets_file ({google.client_secrets_file})"
        try:
            data = json.loads(google.client_secrets_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{where}: cannot be read as JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("web"), dict):
            kind = ", ".join(data) if isinstance(data, dict) else "not an object"
            raise ConfigError(
                f"{where}: expected the JSON of a 'Web application' OAuth client (a \"web\" "
                f"object), found {kind}; create a Web application client in Google Cloud Console"
            )
        web = data["web"]
        client_id = str(web.get("client_id") or client_id)
        secret = google.client_secret or str(web.get("client_secret") or "")
        # Endpoints set explicitly in [google] win over the file's (tests, proxies).
        if google.auth_uri == type(google)().auth_uri:
            auth_uri = str(web.get("auth_uri") or auth_uri)
        if google.token_uri == type(google)().token_uri:
            token_uri = str(web.get("token_uri") or token_uri)
    if not client_id or not secret:
        raise ConfigError("[google] client_id / client_secret: both are needed")
    return GoogleClient(
        client_id=client_id,
        client_secret=secret,
        auth_uri=auth_uri,
        token_uri=token_uri,
        revoke_uri=google.revoke_uri,
        api_endpoint=google.api_endpoint.rstrip("/"),
    )
