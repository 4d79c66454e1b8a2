"""URLs of the project's Access page (role assignments), see ``pipelines.access``."""

from django.urls import path

from pipelines import access

urlpatterns = [
    path("p/<slug:org>/<slug:project>/access/", access.project_access, name="project_access"),
    path(
        "p/<slug:org>/<slug:project>/access/<int:assignment_id>/role/",
        access.change_assignment,
        name="project_access_change",
    ),
    path(
        "p/<slug:org>/<slug:project>/access/<int:assignment_id>/remove/",
        access.remove_assignment,
        name="project_access_remove",
    ),
    path(
        "p/<slug:org>/<slug:project>/access/direct/remove/",
        access.remove_direct_grant,
        name="project_access_remove_direct",
    ),
]
