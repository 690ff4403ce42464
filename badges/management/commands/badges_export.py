"""Export every badge to a CSV file that `badges_import` reads back unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from badges.resources import BadgeResource


class Command(BaseCommand):
    help = "Export all badges to a CSV file ('-' for standard output)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="output CSV file, or - for standard output")

    def handle(self, *args: Any, file: str, **options: Any) -> None:
        data = BadgeResource().export()
        text = data.export("csv")
        if file == "-":
            self.stdout.write(text, ending="")
            return
        Path(file).write_text(text, encoding="utf-8")
        self.stderr.write(f"{len(data)} badge(s) written to {file}")
