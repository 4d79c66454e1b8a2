from django.urls import path

from executions import intervention_views, pipeline_views, views
from pipelines.urls import PIPELINE

urlpatterns = [
    # Pages of projects and pipelines that show or start executions (pipeline_views).
    path("p/<slug:org>/<slug:project>/", pipeline_views.project_detail, name="project"),
    path(
        "p/<slug:org>/<slug:project>/retries/",
        pipeline_views.project_bulk_retry,
        name="project_bulk_retry",
    ),
    path(
        "p/<slug:org>/<slug:project>/insights/",
        pipeline_views.project_insights,
        name="project_insights",
    ),
    path(PIPELINE, pipeline_views.pipeline_detail, name="pipeline"),
    path(PIPELINE + "run/", pipeline_views.pipeline_run, name="pipeline_run"),
    path(PIPELINE + "retries/", pipeline_views.pipeline_bulk_retry, name="pipeline_bulk_retry"),
    path("go/", views.jump, name="jump"),
    path("waiting/", views.waiting, name="waiting"),
    path("waiting/count/", views.waiting_count, name="waiting_count"),
    path("executions/<int:pk>/", views.execution_detail, name="execution"),
    path("executions/<int:pk>/steps/<int:step_pk>/log/", views.step_log, name="execution_step_log"),
    path(
        "executions/<int:pk>/steps/<int:step_pk>/log.txt",
        views.step_log_download,
        name="execution_step_log_download",
    ),
    path("executions/<int:pk>/retry/", views.execution_retry, name="execution_retry"),
    path("executions/<int:pk>/rerun/", views.execution_rerun, name="execution_rerun"),
    path("executions/<int:pk>/approval/", views.execution_approval, name="execution_approval"),
    path("executions/<int:pk>/abort/", views.execution_abort, name="execution_abort"),
    path(
        "executions/<int:pk>/intervention/",
        intervention_views.execution_intervention,
        name="execution_intervention",
    ),
]
