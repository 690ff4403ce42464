"""Export sessions, site aggregates or one session's meter values as CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from django.core.management.base import BaseCommand, CommandError, CommandParser

from badges.models import BadgeGroup
from badges.services import badge_find
from chargers.models import Charger
from transactions.management.commands.badge_statement import day
from transactions.models import Transaction
from transactions.resources import MeterSampleResource, TransactionResource, aggregate_dataset
from transactions.selectors import (
    AGGREGATE_KINDS,
    Period,
    site_aggregate,
    transaction_meter_samples,
    transactions_history,
)

KINDS = ("sessions", *AGGREGATE_KINDS, "meter-values")


class HistoryFilters(TypedDict, total=False):
    """The keyword filters of ``transactions_history`` that the command's options give."""

    charger_pk: int
    badge_pk: int
    group_pk: int


class Command(BaseCommand):
    help = ("Export charging sessions (--kind sessions), energy per day/month/badge/charger, or the meter values "
            "of one session (--kind meter-values --transaction N) as CSV.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="output CSV file, or - for standard output")
        parser.add_argument("--kind", choices=KINDS, default="sessions")
        parser.add_argument("--from", dest="first_day", help="first day, YYYY-MM-DD (site time zone)")
        parser.add_argument("--to", dest="last_day", help="last day included, YYYY-MM-DD")
        parser.add_argument("--charger", help="charge point id")
        parser.add_argument("--badge", help="id tag")
        parser.add_argument("--group", help="badge group name")
        parser.add_argument("--transaction", type=int, help="transaction id (meter-values)")

    def handle(self, *args: Any, file: str, kind: str, **options: Any) -> None:
        if kind == "meter-values":
            if options["transaction"] is None:
                raise CommandError("--kind meter-values needs --transaction")
            if not Transaction.objects.filter(pk=options["transaction"]).exists():
                raise CommandError(f"no transaction {options['transaction']}")
            data = MeterSampleResource().export(transaction_meter_samples(options["transaction"]))
        else:
            sessions = transactions_history(period=self._period(options), **self._filters(options))
            if kind == "sessions":
                data = TransactionResource().export(sessions.order_by("start_time", "pk"))
            else:
                data = aggregate_dataset(kind, site_aggregate(kind, sessions))
        text = data.export("csv")
        if file == "-":
            self.stdout.write(text, ending="")
        else:
            Path(file).write_text(text, encoding="utf-8")
            self.stderr.write(f"{len(data)} row(s) written to {file}")

    def _period(self, options: dict[str, Any]) -> Period | None:
        if not options["first_day"] and not options["last_day"]:
            return None
        if not (options["first_day"] and options["last_day"]):
            raise CommandError("give both --from and --to")
        try:
            return Period.of_days(day(options["first_day"]), day(options["last_day"]))
        except ValueError as error:
            raise CommandError(str(error)) from None

    def _filters(self, options: dict[str, Any]) -> HistoryFilters:
        filters: HistoryFilters = {}
        if options["charger"]:
            charger = Charger.objects.filter(charge_point_id=options["charger"]).first()
            if charger is None:
                raise CommandError(f"unknown charger {options['charger']!r}")
            filters["charger_pk"] = charger.pk
        if options["badge"]:
            badge = badge_find(options["badge"])
            if badge is None:
                raise CommandError(f"no badge with id tag {options['badge']!r}")
            filters["badge_pk"] = badge.pk
        if options["group"]:
            group = BadgeGroup.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"unknown badge group {options['group']!r}")
            filters["group_pk"] = group.pk
        return filters
