"""The API's own routes: accounts (registration, token issue, API keys)."""

from django.urls import path

from .accounts import RegisterView, TokenView
from .key_views import ApiKeyDetailView, ApiKeyListCreateView

urlpatterns = [
    path("auth/register/", RegisterView.as_view(), name="api-register"),
    path("auth/token/", TokenView.as_view(), name="api-token"),
    path("auth/keys/", ApiKeyListCreateView.as_view(), name="api-key-list"),
    path("auth/keys/<uuid:pk>/", ApiKeyDetailView.as_view(), name="api-key-detail"),
]
