"""IaaS billing core: Billing, Cloud, Hosting and Storage as bounded contexts in one Django
project. The Celery app is loaded with Django (``celery -A iaas``), as Celery's Django
guide has it, so ``shared_task`` binds to it."""

from .celery import app as celery_app

__all__ = ("celery_app",)
