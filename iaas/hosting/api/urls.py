from django.urls import path

from . import views

urlpatterns = [
    path("hosting/plans/", views.PlanListView.as_view(), name="hosting-plan-list"),
    path("hosting/subscriptions/", views.SubscriptionListCreateView.as_view(), name="subscription-list"),
    path(
        "hosting/subscriptions/<uuid:pk>/", views.SubscriptionDetailView.as_view(), name="subscription-detail"
    ),
]
