from django.apps import AppConfig
from django.contrib.admin.apps import SimpleAdminConfig
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

# Whether Django's admin imports every app's admin module as the project starts (Django's
# default). A web process turns this off before it sets Django up (evce/asgi.py): it loads
# them with its URLs instead (evce/urls.py), on its first HTTP request.
DISCOVER_ADMIN_AT_START = True


class EvceConfig(AppConfig):
    """The project package: registers the project-wide database lookups, and the faster array
    parameters of PostgreSQL connections (evce/pgarrays.py)."""

    name = "evce"
    default = True  # not the AdminConfig below

    def ready(self) -> None:
        from evce import lookups  # noqa: F401, PLC0415 - registers `__among` on every field

        connection_created.connect(_use_array_literals, dispatch_uid="evce.pgarrays")


def _use_array_literals(sender: object, connection: BaseDatabaseWrapper, **kwargs: object) -> None:
    if connection.vendor == "postgresql":
        from evce.pgarrays import use_array_literals  # noqa: PLC0415 - psycopg only where it is used

        use_array_literals(connection.connection)


class AdminConfig(SimpleAdminConfig):
    """Django's admin, whose modules a web process loads with its URLs rather than as it starts.

    The admin modules bring django-import-export, its resources, the admin's forms and (through
    import-export) django.contrib.postgres and psycopg: measured 0.5 s of a web process's 1.3 s
    start. A reconnect storm's chargers wait in the listen backlog for that start, while only
    an operator's page needs the admin; the first HTTP request of a process pays it once.
    Management commands, the Celery processes and the tests discover at start as usual, so
    the admin's system checks always see every registered model.
    """

    def ready(self) -> None:
        super().ready()
        if DISCOVER_ADMIN_AT_START:
            from django.contrib import admin  # noqa: PLC0415 - the app registry is ready now

            admin.autodiscover()
