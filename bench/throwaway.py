"""A benchmark's own Django: a throw-away data folder and SQLite database, unless the environment
names others (DATABASE_URL, EVCE_DATA_DIR), so that a benchmark never writes to a site's data;
and the CPU its database server spent, for the benchmarks that time database work."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> Path:
    """Put the project on the import path and set Django up; returns the throw-away folder."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    data_dir = Path(tempfile.mkdtemp(prefix="evce-bench-"))
    os.environ.setdefault("EVCE_DATA_DIR", str(data_dir))
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{data_dir}/bench.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evce.settings")
    os.environ.setdefault("LOG_LEVEL", "warning")
    import django

    django.setup()
    return data_dir


def server_cpu_s() -> float:
    """CPU seconds of the PostgreSQL backend serving this process's connection (from /proc);
    0 elsewhere (SQLite works inside this process: its CPU is the client's)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
