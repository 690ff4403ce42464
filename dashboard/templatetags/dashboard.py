"""Number formatting for the dashboard: an unknown value is shown as a dash, never as 0 or blank."""

from __future__ import annotations

from django import template
from django.template.defaultfilters import floatformat

register = template.Library()


@register.filter
def num(value: float | None, digits: int = 1) -> str:
    """`value` with `digits` decimals, or "–" when unknown (None)."""
    if value is None:
        return "–"
    return str(floatformat(value, digits))


@register.filter
def kilo(value: float | None, digits: int = 1) -> str:
    """W → kW or Wh → kWh with `digits` decimals, "–" when unknown."""
    if value is None:
        return "–"
    return str(floatformat(value / 1000.0, digits))
