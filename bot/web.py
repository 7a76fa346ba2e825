"""The web server: the connect page, the OAuth callback, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from urllib.parse import urlsplit

from aiohttp import web

from bot import __version__
from bot.google.oauth import Linked, LoginFailed, LoginReason, OAuth
from bot.metrics import CONTENT_TYPE, Metrics
from bot.pages import page
from bot.wording import declined_why, prefix

log = logging.getLogger(__name__)

OnLinked = Callable[[Linked], Awaitable[None]]
OnFailed = Callable[[LoginFailed], Awaitable[None]]
Ready = Callable[[], Awaitable[dict[str, str]]]  # what is not ready, and why; empty: ready
OAUTH = web.AppKey("oauth", OAuth)


class WebServer:
    """One aiohttp application, embedded in the bot's event loop."""

    def __init__(
        self,
        listen: str,
        oauth: OAuth | None,
        on_linked: OnLinked,
        on_failed: OnFailed,
        metrics: Metrics,
        metrics_listen: str = "",
    ) -> None:
        self.host, self.port = _address(listen)
        self._oauth = oauth
        self._on_linked = on_linked
        self._on_failed = on_failed
        self._metrics = metrics
        self.readiness: Ready | None = None  # set once the chat adapters exist
        self.app = web.Application(
            middlewares=[self._count, self._headers], client_max_size=1024**2
        )
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/livez", self._livez)
        self.app.router.add_get("/readyz", self._readyz)
        # With an address of its own, /metrics is not on the (public) web server at all.
        self._private: web.Application | None = None
        self._private_at = _address(metrics_listen) if metrics_listen else None
        if self._private_at is None:
            self.app.router.add_get("/metrics", self._metrics_page)
        else:
            self._private = web.Application(middlewares=[self._count])
            self._private.router.add_get("/metrics", self._metrics_page)
            self._private.router.add_get("/livez", self._livez)
            self._private.router.add_get("/readyz", self._readyz)
        if oauth is not None:
            self.app[OAUTH] = oauth
            self.app.router.add_get("/connect/{state}", self._connect_page)
            self.app.router.add_post("/connect/{state}", self._to_google)
            self.app.router.add_get("/oauth/callback", self._callback)
        self._runners: list[web.AppRunner] = []

    def add_post(
        self, path: str, handler: Callable[[web.Request], Awaitable[web.Response]]
    ) -> None:
        """Add a POST route (before ``start``), e.g. the Telegram webhook."""
        self.app.router.add_post(path, handler)

    async def start(self) -> None:
        """Listen on the configured address (and the metrics address, if any)."""
        apps = [(self.app, (self.host, self.port))]
        if self._private is not None and self._private_at is not None:
            apps.append((self._private, self._private_at))
        for app, (host, port) in apps:
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            self._runners.append(runner)
            await web.TCPSite(runner, host, port, reuse_address=True).start()
            log.info("web server listening on %s:%d", host, port)

    async def stop(self) -> None:
        """Stop listening and finish requests under way."""
        while self._runners:
            await self._runners.pop().cleanup()

    @web.middleware
    async def _headers(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # redirects: keep them, with our headers
                self._secure(exc.headers)
                raise
            # aiohttp's own 404/405 answers in plain text: ours say what to do, uniformly.
            response = _html(exc.status, page(exc.reason, "There is nothing here."))
        self._secure(response.headers)
        return response

    @web.middleware
    async def _count(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            self._metrics.web_request(_route(request), exc.status)
            raise
        self._metrics.web_request(_route(request), response.status)
        return response

    def _secure(self, headers: MutableMapping[str, str]) -> None:
        form_to = ""
        if self._oauth is not None:
            parts = urlsplit(self._oauth.client.auth_uri)
            form_to = f" {parts.scheme}://{parts.netloc}"
        headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
            f"frame-ancestors 'none'; form-action 'self'{form_to}"
        )
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Cache-Control"] = "no-store"

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__})

    async def _livez(self, request: web.Request) -> web.Response:
        # The event loop answered: that is all. An outage elsewhere must not restart the bot.
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        waiting = await self.readiness() if self.readiness is not None else {}
        if waiting:
            return web.json_response({"status": "not ready", "not_ready": waiting}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics_page(self, request: web.Request) -> web.Response:
        body = await self._metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _connect_page(self, request: web.Request) -> web.Response:
        # Only shows: chat services fetch links to draw previews, so opening changes nothing.
        oauth = request.app[OAUTH]
        try:
            login = await oauth.check_link(request.match_info["state"])
        except LoginFailed as exc:
            return _failed_page(exc)
        network, _, user_id = login.user_key.partition(":")
        who = f"{network.capitalize()} user {login.display_name} ({user_id})"
        return _html(
            200,
            page(
                "Connect your Gmail",
                f"You are connecting Gmail to {who}.",
                "Google will ask you to allow this bot to send email on your behalf. It cannot "
                "read your mail. You can disconnect at any time with "
                f"{prefix(network)}disconnect.",
                "If you did not ask for this link, close this page.",
                form_action=f"/connect/{login.state}",
                button="Continue to Google",
            ),
        )

    async def _to_google(self, request: web.Request) -> web.Response:
        oauth = request.app[OAUTH]
        try:
            login = await oauth.check_link(request.match_info["state"])
        except LoginFailed as exc:
            return _failed_page(exc)
        raise web.HTTPSeeOther(oauth.authorization_url(login))

    async def _callback(self, request: web.Request) -> web.Response:
        oauth = request.app[OAUTH]
        try:
            linked = await oauth.finish(request.query)
        except LoginFailed as exc:
            if exc.login is not None:
                await self._on_failed(exc)  # the chat hears of it, if there is anything to say
            return _failed_page(exc)
        await self._on_linked(linked)
        return _html(
            200,
            page(
                f"Connected as {linked.address}",
                f"Mail you send with {prefix(linked.login.user_key.partition(':')[0])}mail now "
                f"goes out from {linked.address}.",
                "You can close this page and go back to the chat.",
            ),
        )


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def _route(request: web.Request) -> str:
    """Return the route template ("/connect/{state}"), never the path: paths carry states."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _html(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")


_AGAIN = "Send /connect to the bot for a new one."
# What the browser shows when a login links nothing: status, title, the page's sentence.
_FAILED: dict[LoginReason, tuple[int, str, str]] = {
    "unknown": (404, "This link is not valid", f"This login link is unknown. {_AGAIN}"),
    "used": (409, "This link was already used", f"Each login link works once. {_AGAIN}"),
    "expired": (410, "This link has expired", f"Login links work for 10 minutes. {_AGAIN}"),
    "not_allowed": (
        403,
        "Sending was not allowed",
        "On Google's page the box 'Send email on your behalf' was not ticked, so this bot could "
        "not send mail for you and nothing was linked. Send /connect to the bot and tick that "
        "box.",
    ),
    "incomplete": (
        502,
        "Google's answer was incomplete",
        "Google did not send what the bot needs, so nothing was linked. Send /connect to the "
        "bot to try again.",
    ),
    "broken_client": (
        502,
        "The bot's Google setup is broken",
        "Google refused this bot's own credentials, so nothing was linked; this is not your "
        "account's fault. The bot's operator must fix its Google setup.",
    ),
    "refused": (
        400,
        "Google did not confirm the login",
        "Google refused to complete this login, so nothing was linked. Send /connect to the bot "
        "for a new link.",
    ),
    "unreachable": (
        502,
        "Google could not be reached",
        "Google's sign-in service did not answer, so nothing was linked. Send /connect to the "
        "bot for a new link and try again.",
    ),
}


def _failed_page(failure: LoginFailed) -> web.Response:
    if failure.reason == "declined":
        why = declined_why(failure.error)
        text = f"Nothing was linked: {why}. Send /connect to the bot to try again."
        return _html(400, page("Gmail was not connected", text))
    status, title, text = _FAILED[failure.reason]
    return _html(status, page(title, text))
