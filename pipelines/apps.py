from importlib import import_module

from django.apps import AppConfig


class PipelinesConfig(AppConfig):
    name = "pipelines"
    verbose_name = "Pipelines and access"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Signal receivers connect when their module is loaded, and it can only be loaded once
        # the models are (Django's app-loading order, not an import cycle): every process (web,
        # worker, shell) then audits permissions written outside roles (pipelines.grants).
        import_module("pipelines.grants")
