"""Create the first admin account if there is none (idempotent).

Credentials come from ADMIN_USERNAME / ADMIN_PASSWORD; without a password one is
generated and printed once, so a fresh install is never left with a known default.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an initial superuser when no superuser exists."

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            self.stdout.write("admin account: already present")
            return
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        users.objects.create_superuser(username=username, email="", password=password)
        if os.environ.get("ADMIN_PASSWORD"):
            self.stdout.write(f"admin account created: {username} (password from ADMIN_PASSWORD)")
        else:
            self.stdout.write(f"admin account created: {username} / {password}  (shown once: write it down)")
