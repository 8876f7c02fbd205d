"""Who is asking: passwords, sessions, roles, CSRF and care-home API tokens.

Console users log in with a password (argon2id hash, ``telecare user add``); the session
is a random token in a ``Secure; HttpOnly; SameSite=Strict`` cookie, and only its SHA-256
is stored. Every state-changing request made with a session must carry the session's
CSRF token, as the ``X-CSRF-Token`` header (JavaScript, JSON) or a ``csrf_token`` form
field (HTML forms): :func:`current_user` checks it, so a route cannot forget to.

Care homes' systems call ``/api/v1`` with ``Authorization: Bearer tc_<id>_<secret>``
(``telecare token add --site S``): only the SHA-256 of the secret is stored (the secret
is 32 random bytes, so a slow hash adds nothing), and each token is bound to one site.
:func:`site_caller` returns a :class:`Caller` that knows which sites it may touch;
:func:`check_site` turns any other site into 404, the same answer as a site that does
not exist, so a token cannot even learn which sites there are.

Dependencies, in the order a router reaches for them::

    user: User = Depends(current_user)                      # any logged-in person
    user: User = Depends(require_roles(Role.OPERATOR))      # operator or supervisor
    caller: Caller = Depends(site_caller)                   # care-home API
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Final
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.security import APIKeyCookie, HTTPBearer
from pydantic import BaseModel, Field

from telecare.gateway.logging import get_logger
from telecare.gateway.store.accounts import ApiToken, Role, Session, User
from telecare.gateway.web.credentials import (
    TOKEN_PREFIX,
    digest,
    dummy_hash,
    hash_password,
    new_api_token,
    verify_password,
)
from telecare.gateway.web.services import Services, services

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SESSION_COOKIE",
    "Caller",
    "NotLoggedIn",
    "bearer_scheme",
    "check_site",
    "cookie_scheme",
    "current_session",
    "current_user",
    "digest",
    "hash_password",
    "new_api_token",
    "optional_session",
    "render",
    "require_roles",
    "router",
    "site_caller",
    "verify_password",
]

log = get_logger("telecare.web.auth")

SESSION_COOKIE: Final = "telecare_session"
#: Double-submit cookie guarding the login form itself (no session exists yet).
LOGIN_CSRF_COOKIE: Final = "telecare_login_csrf"
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: A session's last-seen time is written at most this often (not on every request).
_TOUCH_EVERY: Final = timedelta(minutes=1)
#: What each role may act as: a supervisor can do everything an operator can.
_GRANTS: Final[dict[Role, frozenset[Role]]] = {
    Role.OPERATOR: frozenset({Role.OPERATOR}),
    Role.SUPERVISOR: frozenset({Role.SUPERVISOR, Role.OPERATOR}),
    Role.INSTALLER: frozenset({Role.INSTALLER}),
    Role.CARE_HOME: frozenset({Role.CARE_HOME}),
}
#: Where a user lands after logging in (console and tablet pages are other routers').
LANDING: Final[dict[Role, str]] = {
    Role.OPERATOR: "/console",
    Role.SUPERVISOR: "/console",
    Role.INSTALLER: "/api/v1/openapi.json",
    Role.CARE_HOME: "/tablet",
}

#: Documented in the OpenAPI document (the dependencies below read the headers themselves).
bearer_scheme = HTTPBearer(auto_error=False, description="Care-home API token (telecare token add)")
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False, description="Console session (POST /api/v1/session)"
)


class NotLoggedIn(Exception):
    """No valid session: 401 for API calls, a redirect to /login for pages."""


# -- sessions ------------------------------------------------------------------------------
async def optional_session(
    request: Request, svc: Annotated[Services, Depends(services)]
) -> Session | None:
    """The session of the cookie, if it is valid and not idle too long."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    key = digest(token)
    safe = request.method in _SAFE_METHODS
    kept = svc.sessions.get(key, time.monotonic()) if safe else None
    found: Session | None = kept if isinstance(kept, Session) else None
    if found is None:
        found = await svc.accounts.session(key)
        if found is not None and safe:
            svc.sessions.put(key, found, time.monotonic())
    now = svc.clock.now()
    idle = timedelta(minutes=svc.config.web.session_idle_min)
    if found is None or found.user.disabled or now - found.last_seen_at > idle:
        return None
    if now - found.last_seen_at > _TOUCH_EVERY:
        await svc.accounts.touch_session(key, now)
        svc.sessions.drop(key)  # the kept copy has the old last-seen time
    return found


async def current_session(
    request: Request, found: Annotated[Session | None, Depends(optional_session)]
) -> Session:
    """The caller's session; checks the CSRF token of any state-changing request."""
    if found is None:
        raise NotLoggedIn
    if request.method not in _SAFE_METHODS:
        await _check_csrf(request, found.csrf_token)
    return found


async def current_user(session: Annotated[Session, Depends(current_session)]) -> User:
    """The logged-in user (401 / redirect to /login without a valid session)."""
    return session.user


async def _check_csrf(request: Request, expected: str) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")


def require_roles(*roles: Role) -> Callable[..., Awaitable[User]]:
    """A dependency: the current user, if one of their grants is in ``roles`` (else 403)."""
    wanted = frozenset(roles)

    async def dependency(user: Annotated[User, Depends(current_user)]) -> User:
        if not _GRANTS[user.role] & wanted:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the role {' or '.join(sorted(wanted))}; you are {user.role}",
            )
        return user

    return dependency


# -- care-home callers -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls the care-home API and which sites they may touch."""

    #: Written into audit rows: ``user:<username>`` or ``token:<name>@<site>``.
    actor: str
    #: The one site a token or care-home user is bound to; ``None``: any (ARC staff).
    site_id: str | None
    user: User | None = None
    token: ApiToken | None = None

    def may(self, site_id: str) -> bool:
        return self.site_id is None or self.site_id == site_id


def check_site(caller: Caller, site_id: str) -> None:
    """404 for a site outside the caller's scope: the same as a site that does not exist."""
    if not caller.may(site_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no site {site_id!r}")


async def site_caller(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    found: Annotated[Session | None, Depends(optional_session)],
) -> Caller:
    """A bearer token's site, or a session user (care home: their site; ARC staff: any)."""
    header = request.headers.get("authorization", "")
    if header:
        return await _token_caller(svc, header)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "send Authorization: Bearer <token> (telecare token add) or log in",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in _SAFE_METHODS:
        await _check_csrf(request, found.csrf_token)
    user = found.user
    if user.role is Role.CARE_HOME:
        return Caller(f"user:{user.username}", user.site_id, user=user)
    if user.role in (Role.OPERATOR, Role.SUPERVISOR):
        return Caller(f"user:{user.username}", None, user=user)
    raise HTTPException(status.HTTP_403_FORBIDDEN, f"the role {user.role} has no care-home access")


async def _token_caller(svc: Services, header: str) -> Caller:
    refused = HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        "invalid or revoked API token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )
    scheme, _, bearer = header.partition(" ")
    if scheme.lower() != "bearer" or not bearer.startswith(TOKEN_PREFIX):
        raise refused
    token_id, _, secret = bearer[len(TOKEN_PREFIX) :].partition("_")
    token = await svc.accounts.token(token_id) if token_id.isalnum() else None
    if token is None or token.revoked_at is not None:
        raise refused
    if not hmac.compare_digest(digest(secret), token.secret_hash):
        raise refused
    return Caller(f"token:{token.name}@{token.site_id}", token.site_id, token=token)


# -- pages and routes ----------------------------------------------------------------------
def render(
    request: Request,
    name: str,
    context: dict[str, object] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render a template of ``web/templates`` (``request`` is always in the context)."""
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request, name, context or {}, status_code=status_code
    )
    return response


router = APIRouter(tags=["session"])


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site (never ``//host`` or a scheme): no open redirect."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return None


def _login_page(request: Request, next_url: str, error: str = "", code: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {"csrf_token": token, "next": next_url, "error": error},
        status_code=code,
    )
    secure = request.app.state.services.config.web.secure_cookies
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, secure=secure, samesite="strict", path="/login"
    )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_form(request: Request, next: str = "") -> Response:
    return _login_page(request, _safe_next(next) or "")


@router.post("/login", include_in_schema=False)
async def login_submit(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    username: Annotated[str, Form(max_length=100)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf_token: Annotated[str, Form(max_length=100)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    next = _safe_next(next) or ""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        return _login_page(request, next, "The form expired: please try again.", 403)
    try:
        user = await authenticate(svc, username, password)
    except TooManyAttempts:
        return _login_page(request, next, "Too many failed attempts: wait a while.", 429)
    if user is None:
        return _login_page(request, next, "Wrong user name or password.", 401)
    target = _safe_next(next) or LANDING[user.role]
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    await start_session(svc, response, user)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
async def logout(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    session: Annotated[Session, Depends(current_session)],
) -> Response:
    await end_session(svc, request)
    response = RedirectResponse("/login", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class TooManyAttempts(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; try again in {round(retry_after)} s")
        self.retry_after = retry_after


async def authenticate(svc: Services, username: str, password: str) -> User | None:
    """The user if the password is right and the account enabled (constant-ish time).
    Raises :class:`TooManyAttempts` while the name is throttled (``LoginThrottle``)."""
    now = svc.clock.now()
    wait = svc.throttle.retry_after(username, now)
    if wait > 0:
        log.warning("login_throttled", retry_after=round(wait))
        raise TooManyAttempts(wait)
    found = await svc.accounts.password_hash(username)
    stored = found[1] if found else dummy_hash()
    ok = await verify_password(stored, password)
    if found is None or not ok or found[0].disabled:
        svc.throttle.failed(username, now)
        log.info("login_refused", reason="unknown" if found is None else "password_or_disabled")
        return None
    svc.throttle.succeeded(username)
    log.info("login", user=found[0].username, role=found[0].role.value)
    return found[0]


def _throttled(exc: TooManyAttempts) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        str(exc),
        headers={"Retry-After": str(max(1, round(exc.retry_after)))},
    )


async def start_session(svc: Services, response: Response, user: User) -> str:
    """Store a new session for ``user`` and set its cookie; return its CSRF token."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    await svc.accounts.create_session(user.user_id, digest(token), csrf, svc.clock.now())
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        secure=svc.config.web.secure_cookies,
        samesite="strict",
        path="/",
    )
    return csrf


async def end_session(svc: Services, request: Request) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        svc.sessions.drop(digest(token))
        await svc.accounts.end_session(digest(token))


# -- the same, as JSON, for scripts and the console's JavaScript -----------------------------
class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class SessionOut(BaseModel):
    username: str
    display_name: str
    role: Role
    site_id: str | None
    #: Send back as ``X-CSRF-Token`` on every POST, PUT, PATCH and DELETE.
    csrf_token: str


def _session_out(user: User, csrf: str) -> SessionOut:
    return SessionOut(
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        site_id=user.site_id,
        csrf_token=csrf,
    )


@router.post(
    "/api/v1/session",
    response_model=SessionOut,
    responses={
        401: {"description": "wrong user name or password"},
        429: {"description": "too many failed logins for this user name"},
    },
)
async def api_login(
    body: LoginBody, response: Response, svc: Annotated[Services, Depends(services)]
) -> SessionOut:
    """Log in; the session cookie is set and the CSRF token returned."""
    try:
        user = await authenticate(svc, body.username, body.password)
    except TooManyAttempts as exc:
        raise _throttled(exc) from None
    if user is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong user name or password")
    csrf = await start_session(svc, response, user)
    return _session_out(user, csrf)


@router.get(
    "/api/v1/session",
    response_model=SessionOut,
    responses={401: {"description": "not logged in"}},
    dependencies=[Depends(cookie_scheme)],
)
async def api_whoami(session: Annotated[Session, Depends(current_session)]) -> SessionOut:
    """Who is logged in, and the CSRF token of the session."""
    return _session_out(session.user, session.csrf_token)


@router.delete(
    "/api/v1/session",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={401: {"description": "not logged in"}, 403: {"description": "CSRF"}},
    dependencies=[Depends(cookie_scheme)],
)
async def api_logout(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    session: Annotated[Session, Depends(current_session)],
) -> Response:
    """Log out (ends the session in the store, clears the cookie)."""
    await end_session(svc, request)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_redirect(request: Request) -> RedirectResponse:
    """Where a page request without a session is sent."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here)}", status_code=status.HTTP_303_SEE_OTHER)
