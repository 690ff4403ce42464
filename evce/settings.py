"""Settings for the EV charging site controller: every knob comes from the environment.

Each variable is documented in README.md ("Configuration"). Values are parsed strictly by
`evce.env`: a bad value stops the start-up with a message naming the variable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from evce import gctune
from evce.env import (
    ConfigError,
    check_redis_url,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_str,
    parse_database_url,
)
from evce.instance import read_running

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("EVCE_DATA_DIR", str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    """SECRET_KEY from the environment, else one generated once and kept in the data dir.

    Generating it keeps the two-command start honest (no well-known default key) while a
    production deployment still sets its own.
    """
    key = env_str("SECRET_KEY", "")
    if key:
        if len(key) < 32:
            raise ConfigError("SECRET_KEY must be at least 32 characters long")
        return key
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PORT = env_int("PORT", 8000, minimum=1, maximum=65535)

INSTALLED_APPS = [
    "daphne",
    "evce.apps.AdminConfig",  # django.contrib.admin, discovered lazily in web processes
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "evce",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "import_export",
    "chargers",
    "badges",
    "transactions",
    "loadmgmt",
    "meters",
    "api",
    "simulator",
    "dashboard",
    "proxy",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "evce.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "evce.asgi.application"

DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'evce.sqlite3'}")
_database = parse_database_url(DATABASE_URL).as_django()
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # A file-backed test database so that a Daphne or Celery process started by the tests
    # sees the same data as the test process; WAL lets the web server, worker and beat
    # read while another one writes.
    _database["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
    # Write transactions queue on a file lock across processes instead of SQLite's sleeping
    # retries (evce/sqlite/base.py).
    _database["ENGINE"] = "evce.sqlite"
    _database["OPTIONS"] = {
        "timeout": 20,
        # Prepared statements kept per connection (Python's default is 128). A write batch of
        # the hot path runs half a dozen texts; each statement kept is ~25 KB of the process
        # (SQLite's compiled program). 128 → 32 saved 0.9 MB of each web process at 125
        # chargers; 32 → 8 another ~0.6 MB (bench_scale --sizes 250: 59.7–61.8 → 55.7–55.8 KB
        # per charger over two processes), with no CPU cost measured: server CPU per connect
        # and per MeterValues at 1,000 chargers and bench_tick at 1,000 and 5,000 sessions
        # moved less than run to run. A statement needed again is parsed again (tens of µs,
        # once per batch, not per row).
        "cached_statements": 8,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif _database["ENGINE"] == "django.db.backends.postgresql":
    _database["ENGINE"] = "evce.postgresql"  # psycopg's C parser for date-times (evce/postgresql/base.py)
# Persistent connections: Channels closes a thread's connection after each database call
# unless it may live on, and opening one (a TCP + auth round trip on PostgreSQL, the WAL
# pragmas on SQLite) cost more than the OCPP write it served. The health check reopens a
# connection the server dropped before the request uses it (on PostgreSQL, one the server has
# not answered for a second: evce/postgresql/base.py).
_database["CONN_MAX_AGE"] = env_int("DB_CONN_MAX_AGE", 600, minimum=0)
_database["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMBEDDED_REDIS_PORT = env_int("EMBEDDED_REDIS_PORT", 6389, minimum=1, maximum=65535)


def _default_redis_url() -> str:
    """The embedded Redis: the one `bin/run` started from this data directory when it runs
    (a management command in another shell then finds it whatever port it took), else
    the port EMBEDDED_REDIS_PORT names."""
    if "EMBEDDED_REDIS_PORT" not in os.environ:
        running = read_running(DATA_DIR)
        if running is not None and running.redis_url:
            return running.redis_url
    return f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"


REDIS_URL = check_redis_url(env_str("REDIS_URL", "") or _default_redis_url())
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 times out socket reads after 5 s by default, the same as the layer's
        # blocking-pop timeout: a longer socket timeout keeps idle receives from failing.
        # redis-py's pool refuses a 101st connection (it does not wait): room for a busy Daphne process.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30, "max_connections": 1000}], "expiry": 60,
                   "capacity": 500},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# Times to the second in the admin's lists and pages (evce/formats/en/formats.py).
FORMAT_MODULE_PATH = ["evce.formats"]

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# Daphne does not serve static files; the ASGI app serves the admin's assets itself
# unless a reverse proxy does it (SERVE_STATIC=false).
SERVE_STATIC = env_bool("SERVE_STATIC", True)

# HTTPS: on by default so that a production start passes `check --deploy`; the run
# command turns it off for the local plain-HTTP embedded mode unless told otherwise.
HTTPS = env_bool("HTTPS", True)
SECURE_SSL_REDIRECT = HTTPS
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = HTTPS
SECURE_HSTS_PRELOAD = HTTPS
if env_bool("BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# OCPP websockets arrive on plain ws:// from chargers on the LAN even when the admin
# is HTTPS-only; the redirect must never touch them.
SECURE_REDIRECT_EXEMPT = [r"^ocpp/"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "EVCE BEMS API",
    "DESCRIPTION": "Site controller API for building energy management systems (see README, BEMS API).",
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the vendored drf-spectacular-sidecar files: nothing from the internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- BEMS API and Modbus TCP server -------------------------------------------------------
# Writes (setpoints, measurements, commands, configuration) allowed per integration and minute.
API_WRITES_PER_MINUTE = env_int("API_WRITES_PER_MINUTE", 120, minimum=1)
# Modbus TCP server for BMS/PLCs (manage.py bems_modbus_server): off unless enabled.
BEMS_MODBUS_ENABLED = env_bool("BEMS_MODBUS_ENABLED", False)
BEMS_MODBUS_BIND = env_str("BEMS_MODBUS_BIND", "0.0.0.0")  # noqa: S104 - BMS/PLCs are on the LAN
BEMS_MODBUS_PORT = env_int("BEMS_MODBUS_PORT", 5020, minimum=1, maximum=65535)
BEMS_MODBUS_UNIT_ID = env_int("BEMS_MODBUS_UNIT_ID", 1, minimum=0, maximum=247)
BEMS_MODBUS_WRITABLE = env_bool("BEMS_MODBUS_WRITABLE", False)
# A zone limit written over Modbus lasts this long unless written again (never permanent).
BEMS_MODBUS_SETPOINT_S = env_int("BEMS_MODBUS_SETPOINT_S", 900, minimum=10, maximum=7 * 86400)
# Client addresses allowed to connect (empty: any).
BEMS_MODBUS_ALLOWED_CLIENTS = env_list("BEMS_MODBUS_ALLOWED_CLIENTS", [])
# Name of the API integration whose heartbeat/failsafe settings govern Modbus-written limits.
BEMS_MODBUS_INTEGRATION = env_str("BEMS_MODBUS_INTEGRATION", "Modbus TCP")

# --- OCPP central system -------------------------------------------------------------
# What to do with a charge point id we have never seen: accept / pending / reject.
OCPP_UNKNOWN_CHARGERS = env_choice("OCPP_UNKNOWN_CHARGERS", "pending", ("accept", "pending", "reject"))
OCPP_HEARTBEAT_INTERVAL = env_int("OCPP_HEARTBEAT_INTERVAL", 300, minimum=10, maximum=86400)
OCPP_PENDING_RETRY_INTERVAL = env_int("OCPP_PENDING_RETRY_INTERVAL", 60, minimum=10, maximum=86400)
OCPP_CALL_TIMEOUT = env_int("OCPP_CALL_TIMEOUT", 30, minimum=1, maximum=600)
OCPP_LOG_RETENTION_DAYS = env_int("OCPP_LOG_RETENTION_DAYS", 30, minimum=1)
OCPP_LOG_MAX_ROWS = env_int("OCPP_LOG_MAX_ROWS", 200_000, minimum=1000)
# When a MeterValues is answered: `committed` (its samples are in the database: a crash loses
# nothing a charger was answered for) or `received` (validated and queued for the next write
# batch: the latency of a bare server, but a crash of the web process loses the samples of the
# open batch, a fraction of a second, which the chargers will not send again; once the writer is
# behind, OCPP_WRITE_BEHIND_MS, answered once committed until it catches up).
OCPP_METER_VALUES_ANSWER = env_choice("OCPP_METER_VALUES_ANSWER", "committed", ("committed", "received"))
# How long a write buffer gathers writes nobody waits for (log rows, `last_seen`, samples
# answered on receipt) before it writes them, counted from the oldest: fewer, larger transactions
# (chargers/writebuffer.py).
# Written at the latest when the web process stops (SIGTERM / SIGINT).
OCPP_WRITE_LINGER_MS = env_int("OCPP_WRITE_LINGER_MS", 100, minimum=0, maximum=250)
# How long the oldest write queued behind the batch being written may wait before a MeterValues
# answered on receipt (OCPP_METER_VALUES_ANSWER=received) is answered once committed instead: a
# node offered more than its writer takes slows its chargers down instead of letting its backlog,
# and so the samples' delay and what a crash loses, grow without end (chargers/writebuffer.py).
OCPP_WRITE_BEHIND_MS = env_int("OCPP_WRITE_BEHIND_MS", 5000, minimum=100, maximum=60_000)
# Garbage-collector thresholds of the web, worker and beat processes (evce/gctune.py): three
# positive integers, or "python" for Python's own (700,10,10).
GC_THRESHOLDS = gctune.parse_thresholds(env_str("GC_THRESHOLDS", "50000,50,100"))
# glibc malloc arenas of a web process (evce/warmup.py): each thread otherwise gets one of its
# own; 0 leaves glibc's default (8 per core). A MALLOC_ARENA_MAX in the environment wins.
MALLOC_ARENAS = env_int("MALLOC_ARENAS", 2, minimum=0, maximum=64)
# Boot storms: the configuration steps after a BootNotification (automatic configuration,
# local list) start after a random delay that grows with the chargers booting at the same
# time (20 ms each), at most this many seconds; the safe default profile goes at once.
OCPP_BOOT_JITTER_MAX_S = env_int("OCPP_BOOT_JITTER_MAX_S", 30, minimum=0, maximum=600)
# In a storm (20 or more chargers of one process in their boot steps), those delays start only
# once no charger has booted for this many milliseconds (at most OCPP_BOOT_JITTER_MAX_S later):
# handshakes, boots and transactions first, configuration after. 0: no such wait.
OCPP_BOOT_QUIET_MS = env_int("OCPP_BOOT_QUIET_MS", 1000, minimum=0, maximum=60_000)
# A charger counts as gone when it has said nothing for this many heartbeat intervals.
OCPP_OFFLINE_AFTER_HEARTBEATS = env_int("OCPP_OFFLINE_AFTER_HEARTBEATS", 3, minimum=2)
# Failed websocket logins allowed per minute, per charge point id and per client address
# (each web process counts its own); beyond them a handshake is refused without hashing.
OCPP_LOGIN_FAILURES_PER_ID = env_int("OCPP_LOGIN_FAILURES_PER_ID", 5, minimum=1)
OCPP_LOGIN_FAILURES_PER_ADDRESS = env_int("OCPP_LOGIN_FAILURES_PER_ADDRESS", 20, minimum=1)
# Unknown charge point ids one client address may register per minute (accept/pending policies).
OCPP_REGISTRATIONS_PER_ADDRESS = env_int("OCPP_REGISTRATIONS_PER_ADDRESS", 10, minimum=1)

# --- Badges and charging sessions -------------------------------------------------------
# May one badge run several sessions at once? When false, a second start gets ConcurrentTx.
BADGES_ALLOW_CONCURRENT_TX = env_bool("BADGES_ALLOW_CONCURRENT_TX", False)
# Push Local Authorization Lists to chargers (at boot, after badge changes, hourly check).
BADGES_LOCAL_LIST_SYNC = env_bool("BADGES_LOCAL_LIST_SYNC", True)
# An open session nothing was heard of for this long is closed by the system.
# Raw meter samples are kept this many days, then folded into per-minute rows.
METER_SAMPLES_RAW_DAYS = env_int("METER_SAMPLES_RAW_DAYS", 7, minimum=1, maximum=3650)
TRANSACTIONS_STALE_AFTER_HOURS = env_int("TRANSACTIONS_STALE_AFTER_HOURS", 12, minimum=1, maximum=24 * 30)

LOG_LEVEL = env_choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"ocpp": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
