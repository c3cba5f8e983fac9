"""Billing in the operator console, as a package: Django's admin autodiscovery imports
this module, and importing the modules below registers every Billing model admin."""

from . import ledger

__all__ = ["ledger"]
