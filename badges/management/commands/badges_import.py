"""Import badges from a CSV file (format: badges.resources; README "Badges and sessions").

Exit status: 0 when the file was imported (or, with --dry-run, would be); 1 when a row has an
error — every error is printed with its line — and nothing was written; with --skip-invalid
the valid rows are written, the others printed, and the exit status is 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tablib
from django.core.management.base import BaseCommand, CommandError, CommandParser

from badges.resources import BadgeImportResource


class Command(BaseCommand):
    help = "Import badges from a CSV file (id tags already known are updated)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="CSV file (UTF-8, header on line 1)")
        parser.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
        parser.add_argument("--skip-invalid", action="store_true", help="import the valid rows, skip the others")

    def handle(self, *args: Any, file: str, dry_run: bool, skip_invalid: bool, **options: Any) -> None:
        try:
            text = Path(file).read_text(encoding="utf-8-sig")
            dataset = tablib.Dataset().load(text, format="csv")
        except (OSError, UnicodeDecodeError) as error:
            raise CommandError(f"cannot read {file}: {error}") from None
        except Exception as error:  # noqa: BLE001 - tablib raises many kinds on a malformed file
            raise CommandError(f"{file} is not a readable CSV file: {error}") from None
        resource = BadgeImportResource(skip_invalid=skip_invalid)
        result = resource.import_data(dataset, dry_run=True, use_transactions=True)
        failed = bool(result.file_errors() or (result.problems() and not skip_invalid))
        if not dry_run and not failed:
            result = BadgeImportResource(skip_invalid=skip_invalid).import_data(
                dataset, dry_run=False, use_transactions=True, rollback_on_validation_errors=True
            )
            failed = bool(result.file_errors())
        for message in result.file_errors():
            self.stderr.write(f"{file}: {message}")
        for problem in result.problems():
            self.stderr.write(f"{file}: {problem}")
        totals = result.totals
        verb = "would import" if dry_run else "imported"
        if failed and result.file_errors():
            raise CommandError(f"{file} cannot be imported: nothing written")
        if failed:
            raise CommandError(f"{len(result.problems())} row(s) with errors in {file}: nothing written "
                               "(--skip-invalid imports the valid rows)")
        self.stdout.write(f"{file}: {verb} {totals['new']} new and {totals['update']} updated badge(s); "
                          f"{len(result.skipped)} row(s) skipped.")
