"""The gateway's web face: one FastAPI app for the console, the care-home API and metrics.

    app = create_app(services)                 # tests: httpx.ASGITransport(app=app)
    async with WebServer(app, host, port):     # telecare run: uvicorn in the background
        ...

Routers (one module each, all taking :class:`~telecare.gateway.web.services.Services`):
``auth`` (login page, ``/api/v1/session``), ``ops`` (``/metrics``, ``/healthz``,
``/readyz``), ``api_care_home`` and ``api_operator`` (``/api/v1``), and the console and
tablet pages. A new router is one line in :data:`_ROUTERS`.

The OpenAPI document is served at ``/api/v1/openapi.json``; there is no Swagger page,
because it would load its scripts from a CDN and every asset here is served by the
gateway (monitoring centres and care homes are often offline or locked down).

Resource handling: :class:`WebServer` runs ``uvicorn.Server.serve`` as one task (through
``start``: in ``telecare run`` the gateway's supervisor, ``gateway.tasks``) and, on
leaving, asks it to exit (open requests finish, SSE streams are closed by their
routers) and awaits it. It never installs signal handlers: the CLI owns SIGINT/SIGTERM
and stops the whole gateway. Error handling: a server that cannot bind its port raises
:class:`~telecare.gateway.errors.ConfigError` naming ``web.host``/``web.port``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Final, Self

import uvicorn
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telecare.gateway.errors import ConfigError
from telecare.gateway.logging import get_logger
from telecare.gateway.store.accounts import Accounts
from telecare.gateway.store.errors import is_unavailable
from telecare.gateway.tasks import Loop, StartLoop, start_once
from telecare.gateway.web import api_care_home, api_operator, auth, console, ops, tablet
from telecare.gateway.web.services import Services

if TYPE_CHECKING:
    from telecare.gateway.app import Gateway

__all__ = ["STATIC_DIR", "TEMPLATES_DIR", "WebServer", "create_app", "gateway_services", "serve"]

log = get_logger("telecare.web")

HERE: Final = Path(__file__).parent
STATIC_DIR: Final = HERE / "static"
TEMPLATES_DIR: Final = HERE / "templates"
API_PREFIX: Final = "/api/v1"

#: Every router of the app, in order. Add yours here (one line).
_ROUTERS: Final[Sequence[APIRouter]] = (
    auth.router,
    ops.router,
    console.router,
    tablet.router,
    api_care_home.router,
    api_operator.router,
)


def create_app(svc: Services, *, extra: Sequence[APIRouter] = ()) -> FastAPI:
    """The FastAPI app over ``svc`` (``extra``: routers a test or embedder adds)."""
    app = FastAPI(
        title="telecare gateway",
        version="1",
        summary="Care-home and operator API of the telecare gateway (docs/api.md).",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = svc
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.globals["csrf_field"] = auth.CSRF_FIELD
    app.state.templates = templates
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in (*_ROUTERS, *extra):
        app.include_router(router)
    app.add_exception_handler(auth.NotLoggedIn, _not_logged_in)
    app.add_middleware(_StoreAway)
    app.add_middleware(_SecurityHeaders)

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        found = await auth.optional_session(request, svc)
        if found is None:
            return RedirectResponse("/login", status_code=303)
        return RedirectResponse(auth.LANDING[found.user.role], status_code=303)

    return app


async def _not_logged_in(request: Request, exc: Exception) -> Response:
    """Pages send the browser to /login; API calls get 401."""
    if request.url.path.startswith(API_PREFIX) or "text/html" not in request.headers.get(
        "accept", ""
    ):
        return JSONResponse({"detail": "not logged in"}, status_code=401)
    return auth.login_redirect(request)


_SECURITY_HEADERS: Final = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"SAMEORIGIN"),  # never inside another site's frame
    (b"referrer-policy", b"same-origin"),
]


class _SecurityHeaders:
    """Headers on every response; API answers (personal data) are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith(API_PREFIX)

        async def add(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + _SECURITY_HEADERS
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, add)


class _StoreAway:
    """The database away is 503 with ``Retry-After`` (a tablet retries with the same
    ``Idempotency-Key``), not a 500. A plain ASGI middleware: it never buffers a
    response, so streams (the console's SSE) pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started or not is_unavailable(exc):
                raise
            log.warning("web_store_unavailable", path=scope["path"], error=type(exc).__name__)
            response = JSONResponse(
                {"detail": "the database is unavailable; retry soon (same Idempotency-Key)"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
            await response(scope, receive, send)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the gateway's CLI owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WebServer:
    """Serve ``app`` on ``host:port`` while inside ``async with`` (see module docstring)."""

    def __init__(
        self, app: FastAPI, host: str, port: int, *, start: StartLoop = start_once
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        self.server = _Server(config)
        self.app = app
        self.host = host
        self._sock: socket.socket
        self._task: asyncio.Task[None] | None = None
        #: Runs ``serve`` (the gateway's supervisor: ``Supervisor.start_once``).
        self._start = start

    @property
    def port(self) -> int:
        """The bound port (the real one when configured as 0)."""
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> Self:
        host, port = self.server.config.host, self.server.config.port
        try:
            # Bound here, not by uvicorn: a port in use is an error we can name (uvicorn
            # would call sys.exit inside its task).
            self._sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(
                f"Config 'web.host'/'web.port' ({host}:{port}): cannot listen ({exc})."
                " Choose a free port or stop what holds it."
            ) from None
        self._task = self._start(Loop("web-server", partial(self.server.serve, [self._sock])))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the web server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("web_listening", url=self.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self.server.should_exit = True
        try:
            await task
        finally:
            self._sock.close()


def gateway_services(gw: Gateway) -> Services:
    """The :class:`Services` of a running gateway (store, dispatch, pipeline, clock)."""
    svc = Services(
        config=gw.config,
        store=gw.store,
        dispatcher=gw.dispatcher,
        accounts=Accounts(gw.store.sql),
        clock=gw.clock,
        rules=gw.pipeline.engine.config,
        observations=gw.pipeline.handle_observation,
        supervisor=gw.supervisor,
    )
    ops.watch_gateway(gw, svc)
    return svc


def serve(gw: Gateway, start: StartLoop = start_once) -> WebServer:
    """The web server of ``telecare run`` (``[web]`` host and port), not yet started."""
    web = gw.config.web
    return WebServer(create_app(gateway_services(gw)), web.host, web.port, start=start)
