"""Gmail's ``users.messages.send``: built by Google's client library, exchanged on aiohttp.

google-api-python-client builds the request (URL, method, headers, body) from its bundled
discovery document without any I/O, and its ``postproc`` parses the answer, raising ``HttpError``
as ``execute()`` would. Only the exchange in between runs here, on one shared aiohttp session on
the event loop: no thread per send, and no retry below us (a blind retry of a send can send
twice). What ``execute()`` adds to the request, the ``Authorization`` header and the content
length, is added here.
"""

from __future__ import annotations

import base64
import io
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httplib2
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest, MediaIoBaseUpload

SIMPLE_UPLOAD_LIMIT = 5 * 1024 * 1024  # above this, the media upload endpoint
# An idle connection is closed by us before the server or a middlebox on the way can drop it:
# a POST that meets a connection already closed at the far end cannot be told from one that
# reached Gmail and was cut off, so it would be "maybe sent". 4 s is below the shortest common
# server default (Apache httpd's KeepAliveTimeout, 5 s); a burst keeps its connections busy.
IDLE_SECONDS = 4.0
CONNECTIONS = 256  # sends in flight at most (the outbox's slots)


class NotSent(Exception):
    """The connection failed before the request was written: safe to try again."""


class MaybeSent(Exception):
    """The request may have reached the server, but no (complete) answer came."""


class _NoHttp:
    """The library's own transport, never used: every exchange goes through aiohttp."""

    def request(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("Gmail requests are exchanged by GmailSender, not by the library")


class GmailSender:
    """Build send requests with the client library; exchange them on one aiohttp session."""

    def __init__(self, api_endpoint: str, timeout: float = 30.0) -> None:
        self._api_endpoint = api_endpoint
        service = build(
            "gmail",
            "v1",
            http=_NoHttp(),
            static_discovery=True,
            cache_discovery=False,
            client_options={"api_endpoint": api_endpoint},
        )
        self._messages = service.users().messages()
        # Connecting may take 10 s at most; once the request is written, each read `timeout`.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None, sock_connect=min(10.0, timeout), sock_read=timeout
        )
        self._session: aiohttp.ClientSession | None = None

    def build(self, raw: bytes) -> HttpRequest:
        """Return the library's send request for the RFC 5322 message ``raw`` (no I/O)."""
        if len(raw) <= SIMPLE_UPLOAD_LIMIT:
            body = {"raw": base64.urlsafe_b64encode(raw).decode("ascii")}
            return self._messages.send(userId="me", body=body)
        # Larger mail goes to the media upload endpoint as one plain upload: a resumable one
        # is several requests (each a chance to half-send), and the library's multipart writer
        # fails on 8-bit mail. Its upload URL keeps Google's scheme and drops any path of
        # api_endpoint, so it is rebuilt on ours.
        media = MediaIoBaseUpload(io.BytesIO(raw), mimetype="message/rfc822", resumable=False)
        request = self._messages.send(userId="me", media_body=media)
        upload = urlsplit(request.uri)
        request.uri = f"{self._api_endpoint}{upload.path}?{upload.query}"
        return request

    async def send(self, token: str, raw: bytes) -> dict[str, Any]:
        """Send ``raw`` with the access token ``token``; return Gmail's answer.

        Raises NotSent if nothing was written, MaybeSent if the answer did not come, and the
        library's HttpError for an error status."""
        request = self.build(raw)
        headers = dict(request.headers)
        headers["authorization"] = f"Bearer {token}"
        headers.setdefault("content-length", str(request.body_size))
        body = request.body.encode() if isinstance(request.body, str) else request.body
        try:
            async with self._http().request(
                request.method,
                request.uri,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as r:
                content = await r.read()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise NotSent(type(exc).__name__) from exc  # refused, unresolvable, TLS, timeout
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise MaybeSent(type(exc).__name__) from exc
        info = {k.lower(): v for k, v in r.headers.items()}
        info["status"] = str(r.status)
        response = httplib2.Response(info)
        response.reason = r.reason or ""
        if response.status >= 300:  # as execute() does, before postproc
            raise HttpError(response, content, uri=request.uri)
        result: dict[str, Any] = request.postproc(response, content)
        return result

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop, as aiohttp wants.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=CONNECTIONS, limit_per_host=0, keepalive_timeout=IDLE_SECONDS
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # answers to one user never reach another
                raise_for_status=False,
            )
        return self._session
