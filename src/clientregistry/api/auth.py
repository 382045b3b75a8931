"""Logging in and out (``/auth``), and who the caller of an admin route is.

* ``POST /auth/token`` — username and password (JSON, or an HTML/OAuth2 form) for a bearer
  token that expires after ``settings.token_minutes``; 401 for wrong credentials, 429 with
  ``Retry-After`` while the address or account must wait (sign-in throttling,
  :mod:`clientregistry.security.tokens`). Every attempt is audited.
* ``POST /auth/logout`` — revokes the token it is called with (204).
* ``GET /auth/me`` — the account and role behind the token.

The dependencies :data:`CurrentUser`, :data:`ReviewerUser`, :data:`AuditorUser` and
:data:`AdminUser` read the bearer token and nothing else: a TLS client certificate (a
point-of-service system) grants nothing here, so a request with a certificate but no valid
token gets 401. Roles are checked on the server for every request (403 otherwise); ``admin``
holds every role. Refusals with a token (invalid/expired/revoked: 401; wrong role: 403) are
audited.

Errors of these routes are JSON ``{"detail": "..."}`` (:class:`ApiError`) once
:func:`install_error_handler` has run on the application; without it they still get the
right status, as an OperationOutcome.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from clientregistry.api.deps import Context, request_context
from clientregistry.registry.links import record_action
from clientregistry.security.tokens import (
    LOGOUT_EVENT,
    IssuedToken,
    audit_login,
    login,
    revoke_token,
    user_for_token,
)
from clientregistry.security.users import has_role
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction, AuditOutcome, Role
from clientregistry.store.models import User

MAX_LOGIN_BODY = 16_384
FORM = "application/x-www-form-urlencoded"


MAX_DETAIL = 300
"""Longest error message of these routes (characters): a message naming an input (a user
name, say) never echoes a large one whole."""


class ApiError(StarletteHTTPException):
    """An error of the admin and auth routes: status, message (cut at :data:`MAX_DETAIL`
    characters), headers."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 1] + "…"
        super().__init__(status_code=status, detail=detail, headers=headers)


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=error.headers)


def install_error_handler(app: FastAPI) -> None:
    """Answer :class:`ApiError` as JSON (the app's handlers answer FHIR OperationOutcomes)."""
    app.add_exception_handler(ApiError, _api_error)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, message, {"WWW-Authenticate": 'Bearer realm="clientregistry"'})


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


# ----------------------------------------------------------------------------- models


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")
    expires_at: datetime
    username: str
    role: Role


class Me(BaseModel):
    username: str
    role: Role
    created_at: datetime


# ----------------------------------------------------------------------------- dependencies

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearerToken",
    description="A token from POST /auth/token (Authorization: Bearer <token>)",
)


def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The enabled account behind the request's bearer token; 401 otherwise."""
    context = request_context(request)
    if credentials is None or credentials.scheme.lower() != "bearer":
        with transaction(context.sessions) as session:
            record_action(
                session,
                agent="(unknown)",
                source_address=client_address(request),
                event_type="token-missing",
                action=AuditAction.EXECUTE,
                entity=None,
                detail={"path": request.url.path[:255]},
                outcome=AuditOutcome.MINOR_FAILURE,
            )
        raise unauthorized("A bearer token from POST /auth/token is required")
    with transaction(context.sessions, write=False) as session:
        user = user_for_token(session, credentials.credentials)
    if user is None:
        with transaction(context.sessions) as session:
            record_action(
                session,
                agent="(unknown)",
                source_address=client_address(request),
                event_type="token-refused",
                action=AuditAction.EXECUTE,
                entity=None,
                detail={"path": request.url.path},
                outcome=AuditOutcome.MINOR_FAILURE,
            )
        raise unauthorized("The bearer token is invalid, expired or revoked")
    request.state.agent = user.username
    request.state.token = credentials.credentials
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_role(*roles: Role) -> Any:
    """A dependency: the current user, who must hold one of ``roles`` (admin holds all)."""

    def check(request: Request, user: CurrentUser) -> User:
        if not has_role(user, roles):
            context = request_context(request)
            with transaction(context.sessions) as session:
                record_action(
                    session,
                    agent=user.username,
                    source_address=client_address(request),
                    event_type="access-denied",
                    action=AuditAction.EXECUTE,
                    entity=None,
                    detail={"path": request.url.path, "role": user.role.value},
                    outcome=AuditOutcome.MINOR_FAILURE,
                )
            needed = " or ".join(r.value for r in roles)
            raise ApiError(403, f"{user.username!r} ({user.role.value}) is not {needed}")
        return user

    return check


ReviewerUser = Annotated[User, Depends(require_role(Role.REVIEWER))]
AuditorUser = Annotated[User, Depends(require_role(Role.AUDITOR))]
AdminUser = Annotated[User, Depends(require_role(Role.ADMIN))]


# ----------------------------------------------------------------------------- routes

router = APIRouter(prefix="/auth", tags=["auth"])

_LOGIN_SCHEMA = LoginRequest.model_json_schema()
_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _LOGIN_SCHEMA},
            FORM: {"schema": _LOGIN_SCHEMA},
        },
    }
}


async def _login_request(request: Request) -> LoginRequest:
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            raise ApiError(413, "The login request is too large")
    try:
        if media == "application/json":
            data = orjson.loads(body)
            if not isinstance(data, dict):
                raise ApiError(400, "Send a JSON object with username and password")
        elif media == FORM:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            data = {key: values[0] for key, values in fields.items() if values}
        else:
            raise ApiError(415, f"Send application/json or {FORM}")
        return LoginRequest.model_validate(data)
    except (orjson.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "The login request is not valid JSON or form data") from None
    except ValidationError:
        raise ApiError(400, "Send username and password") from None


@router.post(
    "/token",
    response_model=TokenResponse,
    openapi_extra=_LOGIN_BODY,
    responses={401: {"description": "Wrong credentials"}, 429: {"description": "Locked out"}},
)
async def token(request: Request, context: Context) -> TokenResponse:
    """Log in: a bearer token for the admin API."""
    credentials = await _login_request(request)
    outcome = await run_in_threadpool(
        login,
        context.sessions,
        credentials.username,
        credentials.password,
        source_address=client_address(request),
        minutes=context.settings.token_minutes,
    )
    if not isinstance(outcome, IssuedToken):
        if outcome.locked:
            raise ApiError(
                429,
                "Too many failed logins; try again later",
                {"Retry-After": str(outcome.retry_after)},
            )
        raise unauthorized("Wrong username or password")
    now = datetime.now(UTC)
    return TokenResponse(
        access_token=outcome.token,
        expires_in=max(0, int((outcome.expires_at - now).total_seconds())),
        expires_at=outcome.expires_at,
        username=outcome.user.username,
        role=outcome.user.role,
    )


@router.post("/logout", status_code=204, response_class=Response)
def logout(request: Request, context: Context, user: CurrentUser) -> Response:
    """Revoke the token this request carries."""
    with transaction(context.sessions) as session:
        revoke_token(session, str(request.state.token))
        audit_login(
            session,
            user.username,
            client_address(request),
            AuditOutcome.SUCCESS,
            LOGOUT_EVENT,
            {},
        )
    return Response(status_code=204)


@router.get("/me", response_model=Me)
def me(user: CurrentUser) -> Me:
    """The account behind the token."""
    return Me(username=user.username, role=user.role, created_at=user.created_at)
