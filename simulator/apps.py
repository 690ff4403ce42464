"""Django registration, only so that ``manage.py simulate_fleet`` is found.

The simulator's modules import nothing from Django: tests and benches use them anywhere.
"""

from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    """The fleet simulator app (a management command, no models)."""

    name = "simulator"
    verbose_name = "Charger fleet simulator"
