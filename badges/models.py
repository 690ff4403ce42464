"""RFID badges (OCPP idTags) and whether they may charge."""

from __future__ import annotations

from django.db import models


class BadgeStatus(models.TextChoices):
    ACCEPTED = "accepted", "Accepted"
    BLOCKED = "blocked", "Blocked"


class Badge(models.Model):
    id_tag = models.CharField(max_length=20, unique=True, help_text="OCPP idTag, case preserved.")
    holder = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, choices=BadgeStatus.choices, default=BadgeStatus.ACCEPTED)
    expires_at = models.DateTimeField(null=True, blank=True)
    vip = models.BooleanField(default=False, help_text="Served first in priority allocation mode.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id_tag"]

    def __str__(self) -> str:
        return f"{self.id_tag} ({self.holder})" if self.holder else self.id_tag
