from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The REST API under /api/ (DRF): a person's keys, logs, balance, codes and prices."""

    name = "api"
    verbose_name = "REST API"

    def ready(self):
        from api import authentication  # noqa: F401 (registers its OpenAPI description)
