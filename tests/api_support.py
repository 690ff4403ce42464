"""Shared setup of the API tests: a settable clock, integrations with tokens, zones, clients."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from api.models import Integration, Scope
from loadmgmt.models import Zone

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


class Clock:
    """``evce.clock.now`` replacement the test moves forward by hand (no sleeping)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        self.now += dt.timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("evce.clock.now", fake)
    cache.clear()  # write throttling counts live in the cache
    return fake


def make_integration(
    name: str = "Siemens Desigo", scope: str = Scope.SETPOINTS, **fields: Any
) -> tuple[Integration, str]:
    integration = Integration(name=name, scope=scope, **fields)
    token = integration.issue_token()
    integration.save()
    return integration, token


class Api:
    """A Django test client that speaks JSON with a bearer token."""

    def __init__(self, token: str | None = None) -> None:
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body)
        return getattr(self.client, method)(f"/api/v1/{path}", data=data, content_type="application/json",
                                             **self.headers)

    def get(self, path: str) -> Any:
        return self.client.get(f"/api/v1/{path}", **self.headers)

    def put(self, path: str, body: object) -> Any:
        return self.call("put", path, body)

    def post(self, path: str, body: object = None) -> Any:
        return self.call("post", path, body if body is not None else {})

    def patch(self, path: str, body: object) -> Any:
        return self.call("patch", path, body)

    def delete(self, path: str) -> Any:
        return self.call("delete", path)


def make_zone(name: str = "Car park", **fields: Any) -> Zone:
    defaults: dict[str, Any] = {"max_current_a": 100.0, "max_power_kw": 60.0, "fallback_current_a": 16.0}
    return Zone.objects.create(name=name, **{**defaults, **fields})
