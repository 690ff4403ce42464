"""Strict parsing of environment variables.

A typo in an environment variable must stop the start-up with a message that names
the variable, never fall back silently to a default the operator did not choose.
No Django import here: settings import this module before Django is configured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse


class ConfigError(RuntimeError):
    """A configuration value is present but not acceptable."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value} is above the maximum {maximum}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of: {', '.join(choices)}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed DATABASE_URL, turned into Django's DATABASES entry by `as_django()`."""

    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: tuple[tuple[str, str], ...] = ()

    def as_django(self) -> dict[str, object]:
        config: dict[str, object] = {
            "ENGINE": self.engine,
            "NAME": self.name,
            "USER": self.user,
            "PASSWORD": self.password,
            "HOST": self.host,
            "PORT": self.port,
            "OPTIONS": dict(self.options),
        }
        return config


_DB_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
}


def parse_database_url(url: str) -> DatabaseUrl:
    """Parse `postgres://user:pw@host:port/name` or `sqlite:////abs/path.sqlite3`."""
    parsed = urlparse(url)
    engine = _DB_ENGINES.get(parsed.scheme)
    if engine is None:
        raise ConfigError(
            f"DATABASE_URL scheme {parsed.scheme!r} is not supported (use postgres:// or sqlite:///)"
        )
    if parsed.scheme == "sqlite":
        # sqlite:////abs/path.sqlite3 is absolute, sqlite:///rel.sqlite3 is relative.
        path = unquote(parsed.netloc + parsed.path)[1:]
        if not path:
            raise ConfigError("DATABASE_URL for sqlite needs a file path, e.g. sqlite:////var/lib/evce/db.sqlite3")
        return DatabaseUrl(engine=engine, name=path)
    name = unquote(parsed.path.lstrip("/"))
    if not name:
        raise ConfigError("DATABASE_URL for postgres needs a database name, e.g. postgres://user@host/evce")
    try:
        port = str(parsed.port or "")
    except ValueError:
        raise ConfigError(f"DATABASE_URL has an invalid port in {url!r}") from None
    options = tuple((key, values[-1]) for key, values in parse_qs(parsed.query).items())
    return DatabaseUrl(
        engine=engine,
        name=name,
        user=unquote(parsed.username or ""),
        password=unquote(parsed.password or ""),
        host=parsed.hostname or "",
        port=port,
        options=options,
    )


def check_redis_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss"} or not parsed.hostname:
        raise ConfigError(f"REDIS_URL={url!r} must look like redis://host:port/db")
    try:
        parsed.port  # noqa: B018 - property access validates the port
    except ValueError:
        raise ConfigError(f"REDIS_URL has an invalid port in {url!r}") from None
    return url
