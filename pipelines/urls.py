from django.urls import path

from pipelines import views

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:org>/<slug:project>/", views.project_detail, name="project"),
    path("p/<slug:org>/<slug:project>/pipelines/<str:identifier>/", views.pipeline_detail, name="pipeline"),
]
