"""Who may do what on the dashboard, enforced on every view, websocket and action.

Three permissions (dashboard.models) given to the three groups by migration 0002:
viewers see, operators also command chargers, admins also change charger configuration.
Checks are on permissions, not group names, so a superuser or a custom group works too.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEW = "dashboard.view_site"
OPERATE = "dashboard.operate_chargers"
CONFIGURE = "dashboard.configure_chargers"
# The dashboard signs in through the admin's login form: one login page, one session.
LOGIN_URL = "/admin/login/"

View = TypeVar("View", bound=Callable[..., HttpResponse])


def requires(permission: str) -> Callable[[View], View]:
    """Anonymous users go to the login form; signed-in users without `permission` get a 403."""

    def decorate(view: View) -> View:
        @wraps(view)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(permission):
                raise PermissionDenied(f"your role does not allow this ({permission})")
            return view(request, *args, **kwargs)

        return login_required(checked, login_url=LOGIN_URL)  # type: ignore[return-value]

    return decorate


def abilities(user: Any) -> dict[str, bool]:
    """What the templates may offer; the views check again whatever the page showed."""
    return {"can_operate": bool(user.has_perm(OPERATE)), "can_configure": bool(user.has_perm(CONFIGURE))}
