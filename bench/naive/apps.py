from django.apps import AppConfig


class NaivePipelineConfig(AppConfig):
    name = "bench.naive"
    label = "naive_pipeline"
    verbose_name = "Naive pipeline (benchmark only)"

    def ready(self) -> None:
        from bench.naive import signals  # noqa: F401 - connects the post_save receiver
