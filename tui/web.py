"""`tuner-tui --web`: the same Textual app in a browser, served by textual-serve.

Each browser tab that connects gets its own `tuner-tui` process (textual-serve runs the command
per websocket and relays the terminal), so the wizard and the monitor are the ones the terminal
shows, keys included. Meant for watching from a laptop through an ssh tunnel
(`ssh -L 8000:127.0.0.1:8000 HOST`), so it binds to 127.0.0.1 unless told otherwise.

The app can submit and stop jobs, so every page and websocket needs the random token printed at
start, in the URL (`?token=…`), or the cookie the page sets (the websocket's); textual-serve has no access control
of its own, hence the middleware here. Its page also builds the websocket address from its
configured host, which breaks behind a tunnel on another port; ours takes it from the request.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import shlex
import sys
from typing import Any

COOKIE = "tuner_tui_token"
DEFAULT_PORT = 8000


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


def tui_command(open_config: str | None = None, attach: str | None = None) -> str:
    """The shell command textual-serve runs for each browser tab: this tuner-tui, same arguments."""
    argv = [sys.executable, "-m", "tuner.tui.app"]
    if open_config:
        argv += ["--open", open_config]
    if attach:
        argv += ["--attach", attach]
    return shlex.join(argv)


def make_server(command: str, host: str, port: int, token: str):
    """A textual-serve Server for `command` that answers only requests that carry `token`."""
    import aiohttp_jinja2
    from aiohttp import web
    from textual_serve.server import Server

    def allowed(request: web.Request) -> bool:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        return hmac.compare_digest(given.encode(), token.encode())

    @web.middleware
    async def needs_token(request: web.Request, handler):
        if request.path.startswith("/static/"):  # textual-serve's own scripts, fonts and styles
            return await handler(request)
        if not allowed(request):
            return web.Response(status=403, text="tuner-tui --web: this address needs the token printed at its "
                                                 "start (open the whole URL it printed, ?token=… included)\n")
        response = await handler(request)
        if request.path == "/" and isinstance(response, web.StreamResponse):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    class TokenServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(needs_token)
            return app

        @aiohttp_jinja2.template("app_index.html")
        async def handle_index(self, request: web.Request) -> dict[str, Any]:
            base = f"{request.scheme}://{request.host}"  # where the browser reached us (a tunnel's port too)
            # The page adds ?width=…&height=… itself; the cookie set with this page carries the token.
            ws = ("wss" if request.scheme == "https" else "ws") + f"://{request.host}/ws"
            size = request.query.get("fontsize", "")
            return {"font_size": int(size) if size.isdigit() else 16,
                    "app_websocket_url": ws,
                    "config": {"static": {"url": f"{base}/static/"}},
                    "application": {"name": "tuner-tui"}}

        async def on_startup(self, app: web.Application) -> None:
            pass  # the URL and the tunnel hint are printed by `serve`, textual-serve's logo is not

        def initialize_logging(self) -> None:
            logging.basicConfig(level=logging.WARNING, format="tuner-tui --web: %(message)s")

    return TokenServer(command, host=host, port=port, title="tuner-tui")


def serve(host: str = "127.0.0.1", port: int = DEFAULT_PORT, open_config: str | None = None,
          attach: str | None = None) -> int:
    """Serve tuner-tui on host:port until Ctrl+C; prints the URL to open and how to tunnel to it."""
    try:
        import textual_serve  # noqa: F401
    except ImportError:
        print("tuner-tui --web needs textual-serve: pip install textual-serve", file=sys.stderr)
        return 2
    token = secrets.token_urlsafe(18)
    shown = f"[{host}]" if ":" in host else host
    print(f"tuner-tui in a browser: http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/?token={token}",
          flush=True)
    if is_loopback(host):
        print(f"from another computer: ssh -L {port}:127.0.0.1:{port} THIS-HOST, then open the URL there", flush=True)
    else:
        print(f"warning: listening on {host}, not only this machine: anyone who reaches port {port} with the "
              "token can drive tuner-tui, and plain http carries the token unencrypted; an ssh tunnel to the "
              "default 127.0.0.1 is safer", file=sys.stderr, flush=True)
    print("Ctrl+C stops it", flush=True)
    make_server(tui_command(open_config, attach), host, port, token).serve()
    return 0
