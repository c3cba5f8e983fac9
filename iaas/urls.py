"""The composition root's URL map: admin, health and readiness, metrics, API schema and
docs, and each context's API under /api/v1/. Anything else under /api/ is a
problem-details 404."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from iaas.api.problems import api_not_found
from iaas.billing.api.stripe_webhook import StripeWebhookView
from iaas.operations.views import healthz, metrics, readyz

api_v1 = [
    path("", include("iaas.api.urls")),
    path("", include("iaas.billing.api.urls")),
    path("", include("iaas.cloud.api.urls")),
    path("", include("iaas.hosting.api.urls")),
    path("", include("iaas.storage.api.urls")),
    path("", include("iaas.notifications.api.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("", include("iaas.notifications.urls")),  # the link in a verification email
    path("payments/stripe/webhook/", StripeWebhookView.as_view(), name="stripe-webhook"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^api/", api_not_found),
]

handler500 = "iaas.api.problems.server_error"
