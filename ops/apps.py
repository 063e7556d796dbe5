from django.apps import AppConfig


class OpsConfig(AppConfig):
    """What operating the service needs: metrics, health and worker probes, worker hooks, the ops page."""

    name = "ops"
    verbose_name = "Operations"
