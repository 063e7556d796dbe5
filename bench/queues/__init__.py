"""One module per task queue under test. Each defines the same trivial task (it records that it ran, see
bench/recorder.py) on that engine's app, and `enqueue(index, enqueued_at)`, which the producer calls.
The broker is the private Redis server of the run, given as BENCH_BROKER_URL.
"""

import os

BROKER_URL_VARIABLE = "BENCH_BROKER_URL"


def broker_url() -> str:
    return os.environ[BROKER_URL_VARIABLE]
