from django.urls import path

from . import views

urlpatterns = [
    path("cloud/plans/", views.PlanListView.as_view(), name="server-plan-list"),
    path("cloud/servers/", views.ServerListCreateView.as_view(), name="server-list"),
    path("cloud/servers/<uuid:pk>/", views.ServerDetailView.as_view(), name="server-detail"),
]
