"""One error shape for the API, and no 500 for a conflict the database or a model refuses.

DRF already answers its own exceptions (400 with field messages, 401, 403, 404, 405, 429);
this adds the Django ones that reach a view through a model or the database: a protected
delete or a uniqueness clash is a 409, a model's ``clean()`` refusal a 400.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


class Conflict(APIException):
    status_code: int = status.HTTP_409_CONFLICT  # subclasses answer 502/504
    default_detail = "Conflicts with the current state."
    default_code = "conflict"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, (ProtectedError, RestrictedError)):
        names = sorted({str(obj) for obj in exc.protected_objects if obj is not None})[:5] if isinstance(
            exc, ProtectedError) else []
        detail = "Still in use" + (f" by: {', '.join(names)}" if names else "") + "; remove those first."
        return Response({"detail": detail}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IntegrityError):
        return Response({"detail": f"Conflicts with existing data: {exc}"}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        body = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
