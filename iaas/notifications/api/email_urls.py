"""The customer's email settings, under /api/v1/."""

from django.urls import path

from . import email_views

urlpatterns = [
    path("notifications/email/", email_views.EmailSettingsView.as_view(), name="notification-email"),
    path(
        "notifications/email/verify/",
        email_views.EmailVerifyView.as_view(),
        name="notification-email-verify",
    ),
]
