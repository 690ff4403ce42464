"""The dashboard's "Upstream links" panel: `{% load proxy_tags %}{% upstream_links %}`."""

from __future__ import annotations

from typing import Any

from django import template

from proxy.selectors import link_statuses

register = template.Library()


@register.inclusion_tag("proxy/_upstream_links.html")
def upstream_links() -> dict[str, Any]:
    return {"links": link_statuses()}
