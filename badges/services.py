"""Authorization rules: what a badge may do, answered as an OCPP idTagInfo."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from badges.models import Badge, BadgeStatus


class AuthorizationStatus:
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    CONCURRENT_TX = "ConcurrentTx"


@dataclass(frozen=True)
class IdTagInfo:
    status: str
    expiry_date: dt.datetime | None = None
    parent_id_tag: str | None = None

    def as_ocpp(self) -> dict[str, str]:
        """The idTagInfo object in OCPP camelCase."""
        info: dict[str, str] = {"status": self.status}
        if self.expiry_date is not None:
            info["expiryDate"] = self.expiry_date.isoformat()
        if self.parent_id_tag:
            info["parentIdTag"] = self.parent_id_tag
        return info


def badge_authorize(*, id_tag: str, now: dt.datetime) -> IdTagInfo:
    """Decide whether `id_tag` may charge now. Unknown tags are Invalid (no free charging)."""
    badge = Badge.objects.filter(id_tag=id_tag).first()
    if badge is None:
        return IdTagInfo(AuthorizationStatus.INVALID)
    if badge.status == BadgeStatus.BLOCKED:
        return IdTagInfo(AuthorizationStatus.BLOCKED)
    if badge.expires_at is not None and badge.expires_at <= now:
        return IdTagInfo(AuthorizationStatus.EXPIRED, expiry_date=badge.expires_at)
    return IdTagInfo(AuthorizationStatus.ACCEPTED, expiry_date=badge.expires_at)
