"""EV charging site controller project package."""

from evce.celery import app as celery_app

__all__ = ["celery_app"]
