from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The plumbing every background job goes through: the transactional outbox and dead letters."""

    name = "jobs"
    verbose_name = "Jobs"
