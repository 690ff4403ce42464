"""Who is calling the v1 API and what they may do: integration tokens and staff sessions.

A token (``Authorization: Bearer evce_…``) belongs to one ``Integration`` and carries its scope.
A staff user logged into the admin (session) gets a scope from their role: superusers and the
``admin`` group → admin, the ``operator`` group → commands, other staff → read. Setpoints and
heartbeats need a token: the watchdog and failsafe belong to an integration, not to a person.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, PermissionsMixin
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, SessionAuthentication
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from api.models import Integration, Scope, hash_token, scope_allows
from evce import clock


class IntegrationPrincipal:
    """``request.user`` for a token call: authenticated, not a Django user, never staff."""

    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_superuser = False

    def __init__(self, integration: Integration) -> None:
        self.integration = integration
        self.pk = None
        self.username = f"integration:{integration.name}"

    def __str__(self) -> str:
        return self.username


class IntegrationTokenAuthentication(BaseAuthentication):
    keywords = ("bearer", "token")

    def authenticate(self, request: Request) -> tuple[IntegrationPrincipal, Integration] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "").split()
        if not header or header[0].lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Give the token as 'Authorization: Bearer <token>'.")
        integration = Integration.objects.filter(token_hash=hash_token(header[1])).first()
        if integration is None or not integration.is_active:
            raise exceptions.AuthenticationFailed("Unknown or revoked token.")
        Integration.objects.filter(pk=integration.pk).update(last_used_at=clock.now())
        return IntegrationPrincipal(integration), integration

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a call without credentials.
        return 'Bearer realm="api"'


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.auth.IntegrationTokenAuthentication"
    name = "integrationToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "Integration token (admin → Integrations)."}


def integration_of(request: Request) -> Integration | None:
    return request.auth if isinstance(request.auth, Integration) else None


def scope_of(request: Request) -> str | None:
    """The caller's scope, or None when they may not use the API at all."""
    integration = integration_of(request)
    if integration is not None:
        return integration.scope
    user: AbstractBaseUser | AnonymousUser = request.user
    if not user.is_authenticated or not getattr(user, "is_staff", False) or not user.is_active:
        return None
    if getattr(user, "is_superuser", False):
        return Scope.ADMIN
    # An authenticated staff session is the project's User model (auth.User), which has groups.
    assert isinstance(user, PermissionsMixin)
    groups = set(user.groups.values_list("name", flat=True))
    if "admin" in groups:
        return Scope.ADMIN
    if "operator" in groups:
        return Scope.COMMANDS
    return Scope.READ


class HasScope(BasePermission):
    """Reads need ``read``; writes need the view's ``write_scope`` (default admin)."""

    message = "This token's scope does not allow this call."

    def has_permission(self, request: Request, view: APIView) -> bool:
        scope = scope_of(request)
        if scope is None:
            return False
        needed = Scope.READ if request.method in SAFE_METHODS else getattr(view, "write_scope", Scope.ADMIN)
        if not scope_allows(scope, needed):
            self.message = f"This call needs the '{needed}' scope; the caller has '{scope}'."
            return False
        if needed == Scope.SETPOINTS and not _may_move_zone_limits(request, scope):
            self.message = "Measurements and setpoints move zone limits: they need loadmgmt.change_zone."
            return False
        return True


def _may_move_zone_limits(request: Request, scope: str) -> bool:
    """A staff session gets the commands scope from the operator role (remote start/stop),
    but the roles table lets operators change nothing else: pushing a measurement or a
    setpoint (it moves dynamic-zone limits) takes the admin role or loadmgmt.change_zone.
    Tokens carry the scope their integration was given."""
    if integration_of(request) is not None or scope == Scope.ADMIN:
        return True
    return bool(request.user.has_perm("loadmgmt.change_zone"))


class WriteRateThrottle(SimpleRateThrottle):
    """Writes per integration (or staff user) and minute; reads are not throttled."""

    scope = "api-writes"

    def timer(self) -> float:
        # The project's clock: tests move it instead of sleeping through the window.
        return clock.now().timestamp()

    def get_rate(self) -> str:
        return f"{settings.API_WRITES_PER_MINUTE}/min"

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method in SAFE_METHODS:
            return True
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        integration = integration_of(request)
        ident = f"i{integration.pk}" if integration is not None else f"u{request.user.pk or self.get_ident(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


AUTHENTICATION = [IntegrationTokenAuthentication, SessionAuthentication]
