"""Settings are parsed strictly, and production settings pass `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from evce.env import ConfigError, env_bool, env_choice, env_int, parse_database_url
from tests.conftest import BASE_DIR

PRODUCTION_LIKE_KEY = "k3!Qz9@vR2#mW8^tY6&uP4*oL1(nB7)cX5-eH0_aJ" * 2


def test_booleans_are_strict(monkeypatch):
    monkeypatch.setenv("X_FLAG", "yes")
    assert env_bool("X_FLAG", False) is True
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ConfigError, match="X_FLAG='maybe' is not a boolean"):
        env_bool("X_FLAG", False)


def test_integers_and_choices_are_checked(monkeypatch):
    monkeypatch.setenv("PORT", "80a")
    with pytest.raises(ConfigError, match="not an integer"):
        env_int("PORT", 8000)
    monkeypatch.setenv("PORT", "70000")
    with pytest.raises(ConfigError, match="above the maximum"):
        env_int("PORT", 8000, maximum=65535)
    monkeypatch.setenv("OCPP_UNKNOWN_CHARGERS", "maybe")
    with pytest.raises(ConfigError, match="must be one of: accept, pending, reject"):
        env_choice("OCPP_UNKNOWN_CHARGERS", "pending", ("accept", "pending", "reject"))


def test_database_urls():
    pg = parse_database_url("postgres://evce:p%40ss@db.local:5433/evce?sslmode=require")
    assert (pg.engine, pg.name, pg.user, pg.password, pg.host, pg.port) == (
        "django.db.backends.postgresql", "evce", "evce", "p@ss", "db.local", "5433")
    assert pg.as_django()["OPTIONS"] == {"sslmode": "require"}
    assert parse_database_url("sqlite:////var/lib/evce/db.sqlite3").name == "/var/lib/evce/db.sqlite3"
    with pytest.raises(ConfigError, match="scheme 'mysql' is not supported"):
        parse_database_url("mysql://x/y")
    with pytest.raises(ConfigError, match="needs a database name"):
        parse_database_url("postgres://host/")


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_a_bad_value_stops_the_start_up_with_a_clear_message():
    result = run_manage("check", DEBUG="perhaps")
    assert result.returncode != 0
    assert "DEBUG='perhaps' is not a boolean" in result.stderr


def test_production_settings_pass_check_deploy():
    result = run_manage("check", "--deploy", "--fail-level", "WARNING",
                        DEBUG="false", HTTPS="true", SECRET_KEY=PRODUCTION_LIKE_KEY, ALLOWED_HOSTS="evce.example.com")
    assert result.returncode == 0, result.stdout + result.stderr
