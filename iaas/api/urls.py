"""The API's own routes: accounts (registration, token issue)."""

from django.urls import path

from .accounts import RegisterView, TokenView

urlpatterns = [
    path("auth/register/", RegisterView.as_view(), name="api-register"),
    path("auth/token/", TokenView.as_view(), name="api-token"),
]
