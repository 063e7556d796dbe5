"""`/metrics` under several gunicorn workers: every worker process answers with the same, current numbers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from orders.models import Order
from orders.tasks import process_order_task
from tests.helpers import wait_for
from tests.ops.helpers import database_url, free_port, make_order, parse_metrics

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
Status = Order.Status


def test_every_gunicorn_worker_reports_what_another_process_wrote():
    port = free_port()
    environment = os.environ | {"DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url()}
    command = [sys.executable, "-m", "gunicorn", "proj.wsgi:application", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen(
        [*command, "--workers", "3", "--preload"], cwd=ROOT, env=environment, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:

        def answers() -> bool:
            assert server.poll() is None, "gunicorn exited"
            try:
                return requests.get(url, timeout=5).ok
            except requests.ConnectionError:
                return False

        wait_for(answers, timeout=60, message="gunicorn to answer")
        # Written by this process, after the gunicorn workers started: no worker can have counted it itself.
        make_order(status=Status.COMPLETED, seconds_to_final=3)
        make_order(status=Status.FAILED, seconds_to_final=30)
        process_order_task.apply_async(kwargs={"order_id": "x", "region": "eu"})

        scrapes = []
        for _ in range(12):
            # A new connection each time, so the requests spread over gunicorn's workers.
            samples = parse_metrics(requests.get(url, timeout=10, headers={"Connection": "close"}).text)
            scrapes.append(
                (
                    samples[("shop_orders", (("status", "completed"),))],
                    samples[("shop_orders", (("status", "failed"),))],
                    samples[("celery_queue_length", (("queue_name", "cloud.eu"),))],
                    samples[("shop_order_placement_to_final_seconds_count", (("status", "completed"),))],
                )
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert scrapes == [(1, 1, 1, 1)] * 12
