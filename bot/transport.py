"""An httplib2-shaped HTTP object over urllib3 that never retries on its own.

google-api-python-client talks through any object with httplib2's ``request`` method. httplib2
itself resends a request whose connection dropped before the answer came, which for a Gmail send
can mean a second copy of the mail. This one never retries, and tells apart a request that
certainly never left (``NotSent``) from one that may have reached the server (``MaybeSent``).
"""

from __future__ import annotations

from typing import Any

import httplib2
import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError


class NotSent(Exception):
    """The connection failed before the request was written: safe to try again."""


class MaybeSent(Exception):
    """The request may have reached the server, but no (complete) answer came."""


class NoRetryHttp:
    """A thread-safe stand-in for ``httplib2.Http`` for googleapiclient's ``execute``."""

    def __init__(
        self, pool: urllib3.PoolManager, timeout: float = 30.0, bearer: str | None = None
    ) -> None:
        self._pool = pool
        self._timeout = urllib3.Timeout(connect=min(10.0, timeout), read=timeout)
        self._auth = {"authorization": f"Bearer {bearer}"} if bearer else {}

    def request(
        self,
        uri: str,
        method: str = "GET",
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        **_: Any,
    ) -> tuple[httplib2.Response, bytes]:
        """Send one request; return httplib2's (response, content) pair."""
        try:
            r = self._pool.request(
                method,
                uri,
                body=body,
                headers={**(headers or {}), **self._auth},
                retries=False,
                redirect=False,
                timeout=self._timeout,
            )
        except ConnectTimeoutError as exc:  # includes refused connections and DNS failures
            raise NotSent(type(exc).__name__) from exc
        except (HTTPError, OSError) as exc:
            raise MaybeSent(type(exc).__name__) from exc
        info: dict[str, str] = {k.lower(): v for k, v in r.headers.items()}
        info["status"] = str(r.status)
        response = httplib2.Response(info)
        response.reason = r.reason or ""
        return response, r.data
