"""Single sign-on routes (``/auth/oidc``), present when ``[oidc]`` names an identity provider.

* ``GET /auth/oidc/login`` — 302 to the provider's authorization endpoint (authorization code
  with PKCE, a fresh ``state`` and ``nonce``), which the browser keeps meanwhile in the
  ``cr_oidc`` cookie (HttpOnly, Secure, ``SameSite=Lax`` so that it comes back with the
  provider's redirect, ``Path=/auth/oidc``, ten minutes).
* ``GET /auth/oidc/callback`` — the provider sends the browser back here with ``code`` and
  ``state``: the state must match the cookie's, the code is exchanged and the ID token checked
  (:mod:`clientregistry.security.oidc`), the account found or made
  (:mod:`clientregistry.security.sso_accounts`), and a browser session of the web UI started
  (:func:`clientregistry.ui.session.start_browser_session`: the ``cr_session`` cookie); 303 to
  ``/ui/``. Refusals answer the admin API's error format (400 state, 401 token, 403 role,
  409 a local account of that name, 502 provider unreachable) and are audited.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse

from clientregistry.api.admin_errors import api_error
from clientregistry.api.deps import Context
from clientregistry.security.oidc import LoginFlow, OidcClient, OidcRefused
from clientregistry.security.sso_accounts import audit_sso, sign_in
from clientregistry.settings import Settings
from clientregistry.store.enums import AuditOutcome
from clientregistry.ui.session import client_address, start_browser_session

FLOW_COOKIE = "cr_oidc"
FLOW_PATH = "/auth/oidc"
FLOW_SECONDS = 600
LANDING = "/ui/"

router = APIRouter(prefix=FLOW_PATH, tags=["auth"])


def mount(app: FastAPI, settings: Settings) -> None:
    """Add the single sign-on routes when an identity provider is configured."""
    if settings.oidc is None:
        return
    app.state.oidc = OidcClient(settings.oidc)
    app.include_router(router)


def _client(request: Request) -> OidcClient:
    client: OidcClient = request.app.state.oidc
    return client


def _redirect_uri(request: Request) -> str:
    configured = _client(request).settings.redirect_url
    return configured or str(request.url_for("oidc_callback"))


def _clear_flow(response: Response) -> None:
    response.delete_cookie(FLOW_COOKIE, path=FLOW_PATH, secure=True, httponly=True, samesite="lax")


@router.get(
    "/login",
    status_code=302,
    response_class=RedirectResponse,
    responses={502: {"description": "The identity provider cannot be reached"}},
)
async def oidc_login(request: Request) -> Response:
    """Log in with the organisation's identity provider."""
    try:
        flow, url = await _client(request).begin(_redirect_uri(request))
    except OidcRefused as refused:
        return JSONResponse(api_error(refused.reason), refused.status)
    response = RedirectResponse(url, 302)
    response.set_cookie(
        FLOW_COOKIE,
        flow.dump(),
        max_age=FLOW_SECONDS,
        path=FLOW_PATH,
        secure=True,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get(
    "/callback",
    status_code=303,
    response_class=RedirectResponse,
    responses={
        400: {"description": "No login in progress, or a state that is not its"},
        401: {"description": "The provider refused, or its ID token does not hold"},
        403: {"description": "No role of this registry, or a disabled account"},
        409: {"description": "A local account has that username"},
        502: {"description": "The identity provider cannot be reached"},
    },
)
async def oidc_callback(
    request: Request,
    context: Context,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
) -> Response:
    """Where the identity provider sends the browser back."""
    address = client_address(request)
    flow = LoginFlow.load(request.cookies.get(FLOW_COOKIE))
    username = "(single sign-on)"
    try:
        if error:
            raise OidcRefused(401, f"the identity provider answered {error[:80]!r}")
        if flow is None:
            raise OidcRefused(400, "no single sign-on in progress in this browser")
        if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
            raise OidcRefused(400, "the state does not match this browser's login")
        if not code or len(code) > 2048:
            raise OidcRefused(400, "the provider sent no usable code")
        try:
            identity = await _client(request).finish(flow, code[:2048], _redirect_uri(request))
        except OidcRefused as refused:
            username = refused.username or username
            raise
        user = await run_in_threadpool(sign_in, context.sessions, identity, address)
    except OidcRefused as refused:
        if not refused.audited:
            detail = {"reason": refused.reason, "issuer": _client(request).settings.issuer}
            await run_in_threadpool(
                audit_sso, context.sessions, username, address, AuditOutcome.MINOR_FAILURE, detail
            )
        response: Response = JSONResponse(api_error(refused.reason), refused.status)
        _clear_flow(response)
        return response
    response = RedirectResponse(LANDING, 303)
    await run_in_threadpool(start_browser_session, response, context, user)
    _clear_flow(response)
    return response
