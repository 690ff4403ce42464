"""Nothing but the OCPP endpoint is open to an unauthenticated user."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db

# Pages that must answer an anonymous user (the login form and the redirect to it).
PUBLIC = {"/admin/login/", "/admin/logout/", "/"}


def concrete_paths(patterns: list, prefix: str = "") -> list[str]:
    """Every URL of the project, with sample values in place of path converters."""
    paths = []
    for entry in patterns:
        route = str(entry.pattern)
        route = re.sub(r"<int:\w+>", "1", route)
        route = re.sub(r"<(path:|str:|slug:)?\w+>", "1", route)
        route = route.lstrip("^").rstrip("$").replace("\\Z", "").replace("\\", "")
        if isinstance(entry, URLResolver):
            paths += concrete_paths(entry.url_patterns, prefix + route)
        elif isinstance(entry, URLPattern) and not re.search(r"[()?*+\[\]]", route):
            paths.append("/" + prefix + route)
    return sorted(set(paths))


def test_every_url_needs_a_login(client):
    paths = concrete_paths(get_resolver().url_patterns)
    assert len(paths) > 50  # the admin's pages, the reports, the API
    for path in paths:
        if path in PUBLIC:
            continue
        for method in (client.get, client.post):
            response = method(path, secure=True)
            denied = response.status_code in (401, 403, 404, 405) or (
                response.status_code == 302 and "/admin/login/" in response["Location"])
            assert denied, f"{method.__name__.upper()} {path} answered {response.status_code} to an anonymous user"


def test_the_api_refuses_an_anonymous_client(client):
    response = client.post("/api/zones/1/measurement", {"power_kw": 1}, content_type="application/json",
                           secure=True)
    assert response.status_code in (401, 403)
