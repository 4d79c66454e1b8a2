from django.urls import path

from pipelines import views

PIPELINE = "p/<slug:org>/<slug:project>/pipelines/<str:identifier>/"

urlpatterns = [
    path("", views.home, name="home"),
    path("p/<slug:org>/<slug:project>/", views.project_detail, name="project"),
    path(PIPELINE, views.pipeline_detail, name="pipeline"),
    path(PIPELINE + "definition/", views.pipeline_definition, name="pipeline_definition"),
    path(PIPELINE + "edit/", views.pipeline_edit, name="pipeline_edit"),
    path(PIPELINE + "history/", views.pipeline_history, name="pipeline_history"),
    path(PIPELINE + "run/", views.pipeline_run, name="pipeline_run"),
]
