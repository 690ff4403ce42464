"""What a web process loads as it starts, and what it leaves for its first HTTP request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from django.contrib import admin

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys
import evce.asgi
from django.contrib import admin
from django.urls import reverse
at_start = sorted(m._meta.label for m in admin.site._registry)
loaded_at_start = [name for name in ("transactions.admin", "badges.admin", "meters.admin", "pymodbus")
                   if name in sys.modules]
reverse("admin:index")  # loads the URLconf, as the first HTTP request does
print(json.dumps({"at_start": at_start, "loaded_at_start": loaded_at_start,
                  "after_urls": sorted(m._meta.label for m in admin.site._registry)}))
"""


def test_a_web_process_loads_the_admin_with_its_urls_and_then_has_every_model(tmp_path) -> None:
    """Nor does it load pymodbus (~12 ms of each start): the meters' models name its configuration
    type only; the Celery worker that polls meters and the admin's meter pages load it."""
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env["EVCE_DATA_DIR"] = str(tmp_path)
    probe = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120, check=True)
    seen = json.loads(probe.stdout.strip().splitlines()[-1])

    assert seen["loaded_at_start"] == []
    assert "transactions.Transaction" not in seen["at_start"]
    # Once the URLs are loaded the registry is the one a management command (and these tests) has.
    assert seen["after_urls"] == sorted(model._meta.label for model in admin.site._registry)


def test_the_install_step_compiles_every_project_module_and_the_ocpp_validators(tmp_path, monkeypatch) -> None:
    """evce.precompile (bin/run, bin/test): a start finds bytecode for every module of the running
    system, and the validators compiled, even where Python does not write bytecode itself."""
    import importlib.util
    import shutil

    from chargers import schemas
    from evce import precompile

    copy = tmp_path / "project"
    for package in precompile.project_packages():
        shutil.copytree(package, copy / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(precompile, "BASE_DIR", copy)
    monkeypatch.setattr(schemas, "CACHE_DIR", tmp_path / "validators")
    monkeypatch.setattr(schemas, "_validators", {})

    assert precompile.main() == 0

    names = {package.name for package in precompile.project_packages()}
    assert {"chargers", "evce", "loadmgmt", "dashboard"} <= names and "tests" not in names
    sources = list(copy.rglob("*.py"))
    assert sources and all(Path(importlib.util.cache_from_source(str(path))).is_file() for path in sources)
    assert len(list((tmp_path / "validators").glob("ocpp16-validators.*.marshal"))) == 1
