from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    verbose_name = "Pipelines and access"
    default_auto_field = "django.db.models.BigAutoField"
