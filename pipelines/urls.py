"""URLs of the pipelines' own pages. The project page, the pipeline page (its Executions tab)
and the Run dialog are in ``executions.urls`` (``executions.pipeline_views``)."""

from django.urls import path

from pipelines import secret_views, views

PIPELINE = "p/<slug:org>/<slug:project>/pipelines/<str:identifier>/"

urlpatterns = [
    path("", views.home, name="home"),
    path(
        "p/<slug:org>/<slug:project>/secrets/",
        secret_views.project_secrets,
        name="project_secrets",
    ),
    path(
        "p/<slug:org>/<slug:project>/secrets/<str:name>/replace/",
        secret_views.replace_secret,
        name="project_secret_replace",
    ),
    path(
        "p/<slug:org>/<slug:project>/secrets/<str:name>/delete/",
        secret_views.delete_secret,
        name="project_secret_delete",
    ),
    path(PIPELINE + "definition/", views.pipeline_definition, name="pipeline_definition"),
    path(PIPELINE + "edit/", views.pipeline_edit, name="pipeline_edit"),
    path(PIPELINE + "history/", views.pipeline_history, name="pipeline_history"),
]
