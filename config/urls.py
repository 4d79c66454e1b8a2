from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include("pipelines.urls")),
    path("", include("pipelines.access_urls")),
    path("", include("executions.urls")),
    path("", include("api.urls")),
]

handler400 = "config.views.bad_request"
handler500 = "config.views.server_error"
