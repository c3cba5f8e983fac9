from django.urls import path

from . import views

urlpatterns = [
    path("storage/plans/", views.PlanListView.as_view(), name="volume-plan-list"),
    path("storage/volumes/", views.VolumeListCreateView.as_view(), name="volume-list"),
    path("storage/volumes/<uuid:pk>/", views.VolumeDetailView.as_view(), name="volume-detail"),
]
