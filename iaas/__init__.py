"""IaaS billing core: Billing, Cloud and Hosting as bounded contexts in one Django project."""
