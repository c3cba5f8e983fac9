"""Public pages of notifications (outside /api/, no API key): the link in the email that
verifies an address."""

from django.urls import path

from . import verification

urlpatterns = [
    path("email/verify/<str:token>/", verification.email_verify_page, name="email-verify"),
]
