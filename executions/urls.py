from django.urls import path

from executions import views

urlpatterns = [
    path("executions/<int:pk>/", views.execution_detail, name="execution"),
]
