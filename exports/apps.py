from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class ExportsConfig(AppConfig):
    name = "exports"
    verbose_name = "Exports"

    def ready(self) -> None:
        checks.register(check_export_region)


def check_export_region(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """A configured function needs a region, from EXPORT_LAMBDA_REGION or AWS's chain: say so before any batch fails."""
    if not settings.EXPORT_LAMBDA_FUNCTION_NAME or settings.EXPORT_LAMBDA_REGION:
        return []
    import boto3  # only when the export is on and names no region itself

    if boto3.session.Session().region_name:
        return []
    return [
        checks.Error(
            "EXPORT_LAMBDA_FUNCTION_NAME is set but no AWS region is known.",
            hint="Set EXPORT_LAMBDA_REGION (or AWS_DEFAULT_REGION, or a region in ~/.aws/config).",
            id="exports.E001",
        )
    ]
