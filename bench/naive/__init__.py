"""The order pipeline "as the article writes it", for comparison only: bench-only code, never the service's.

A `post_save` signal on Order schedules processing with `transaction.on_commit(lambda: task.delay(id))`; Celery
runs with its defaults (only a broker URL); there is no outbox, no guarded transitions, no idempotency, no
retries. Same models, same payment sandbox, same email templates as the service, so the difference measured is
the pipeline's machinery. Run with DJANGO_SETTINGS_MODULE=bench.naive.settings.
"""
