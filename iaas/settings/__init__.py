"""Settings package: ``base`` holds what every environment shares; ``development`` and
``production`` switch what differs. ``DJANGO_SETTINGS_MODULE`` picks one (manage.py
defaults to development)."""
