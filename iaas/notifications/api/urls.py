from django.urls import include, path

from . import views

urlpatterns = [
    path("webhooks/endpoints/", views.EndpointListCreateView.as_view(), name="webhook-endpoint-list"),
    path("webhooks/endpoints/<uuid:pk>/", views.EndpointDetailView.as_view(), name="webhook-endpoint-detail"),
    path(
        "webhooks/endpoints/<uuid:pk>/rotate-secret/",
        views.RotateSecretView.as_view(),
        name="webhook-endpoint-rotate-secret",
    ),
    path("webhooks/deliveries/", views.DeliveryListView.as_view(), name="webhook-delivery-list"),
    path(
        "webhooks/deliveries/<uuid:pk>/redeliver/",
        views.RedeliverView.as_view(),
        name="webhook-delivery-redeliver",
    ),
    path("", include("iaas.notifications.api.email_urls")),
]
