"""A badge's statement for a period as CSV: one row per session, then the totals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from badges.services import badge_find
from transactions.resources import statement_dataset
from transactions.selectors import Period, badge_statement


def day(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"bad date {value!r} (use YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Write a badge's sessions (kWh, durations) started between two days, with totals, as CSV."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("id_tag")
        parser.add_argument("--from", dest="first_day", required=True, help="first day, YYYY-MM-DD (site time zone)")
        parser.add_argument("--to", dest="last_day", required=True, help="last day included, YYYY-MM-DD")
        parser.add_argument("--output", "-o", default="-", help="CSV file (default: standard output)")

    def handle(self, *args: Any, id_tag: str, first_day: str, last_day: str, output: str, **options: Any) -> None:
        badge = badge_find(id_tag)
        if badge is None:
            raise CommandError(f"no badge with id tag {id_tag!r}")
        try:
            period = Period.of_days(day(first_day), day(last_day))
        except ValueError as error:
            raise CommandError(str(error)) from None
        text = statement_dataset(badge_statement(badge=badge, period=period)).export("csv")
        if output == "-":
            self.stdout.write(text, ending="")
        else:
            Path(output).write_text(text, encoding="utf-8")
