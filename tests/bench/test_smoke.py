"""Every benchmark runs end to end at a tiny size, so that none can rot unnoticed.

They assert that the report has every column and that nothing was lost; never how fast anything was. Each
benchmark starts its own redis-servers and uses a database of its own (see the `results` fixture).
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import engines, orders

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
# Tiny sizes: enough for every phase to run and every column to be filled.
ENGINES_SMOKE = ["--tasks", "200", "--runs", "1", "--latency-seconds", "1", "--recovery-seconds", "1",
                 "--grace-seconds", "2"]  # fmt: skip
SMOKE_RUNS = {
    # The engines in two halves side by side: the Celery rows start Django-loading workers and producers.
    "engines-celery": ["engines", *ENGINES_SMOKE, "--engines", "celery-production,celery-defaults"],
    "engines-others": ["engines", *ENGINES_SMOKE, "--engines", "rq-fork,rq-simple,huey,dramatiq"],
    "orders": ["orders", "--orders", "30", "--clients", "4", "--runs", "1"],
    "profile": ["profile", "--orders", "20"],
    "relay": ["relay", "--events", "1200", "--runs", "1"],
}
TIMEOUT_SECONDS = 600


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """Run the benchmarks side by side (most of their time is processes starting up); each run's results folder.

    Each gets its own database, `$BENCH_DATABASE_smoke_<name>` (default `shop_bench_smoke_<name>`).
    """
    base = os.environ.get("BENCH_DATABASE", "shop_bench")
    started = {}
    for name, arguments in SMOKE_RUNS.items():
        root = tmp_path_factory.mktemp(name)
        environment = os.environ | {"BENCH_DATABASE": f"{base}_smoke_{name.replace('-', '_')}"}
        environment.pop("DJANGO_SETTINGS_MODULE", None)
        log = (root / "output.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "bench", *arguments, "--results", str(root / "results")],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started[name] = (process, root, log)
    folders = {}
    try:
        for name, (process, root, log) in started.items():
            process.wait(timeout=TIMEOUT_SECONDS)
            log.close()
            output = (root / "output.log").read_text()
            assert process.returncode == 0, f"bench {name} failed:\n{output[-4000:]}"
            (folders[name],) = (root / "results").iterdir()
    finally:
        for process, _, _ in started.values():
            if process.poll() is None:
                process.terminate()  # the bench stops every process it started on SIGTERM
                process.wait(timeout=60)
    return folders


def read_csv(path: Path) -> list[dict]:
    with path.open() as rows:
        return list(csv.DictReader(rows))


def test_engines_reports_every_column_for_every_engine_and_loses_no_task(results):
    halves = (results["engines-celery"], results["engines-others"])

    rows = [row for directory in halves for row in read_csv(directory / "runs.csv")]
    assert [row["engine"] for row in rows] == list(engines.DEFAULT_ENGINES)
    for row in rows:
        measured = [column.key for column in engines.COLUMNS if column.key != "recovery_s"]
        assert all(row[key] != "" for key in measured), row
        assert "recovery_s" in row  # empty when throughput never came back before the queue ran dry
        assert (row["lost"], row["twice"]) == ("0", "0"), row
    for directory in halves:
        summary = read_csv(directory / "summary.csv")
        assert [line["engine"] for line in summary] == [row["engine"] for row in read_csv(directory / "runs.csv")]
        markdown = (directory / "report.md").read_text()
        assert all(column.heading in markdown for column in engines.COLUMNS)
        assert "## Machine" in markdown
        assert "## Versions" in markdown
        assert "## Configuration" in markdown
        for chart in ("throughput.png", "latency.png", "memory.png", "recovery.png"):
            assert (directory / chart).read_bytes()[:4] == b"\x89PNG"


def test_orders_reports_both_variants_bare_celery_and_the_ratios_and_loses_no_order(results):
    directory = results["orders"]

    rows = {row["variant"]: row for row in read_csv(directory / "runs.csv")}
    assert set(rows) == {
        "ours",
        "naive",
        "bare celery no-op",
        "ours, queued",
        "bare celery no-op, queued",
        "ratios",
    }
    for variant in ("ours", "naive"):
        assert all(rows[variant][column.key] != "" for column in orders.COLUMNS), rows[variant]
        assert rows[variant]["placed"] == "30"
    assert (rows["ours"]["completed"], rows["ours"]["emails"], rows["ours"]["events"]) == ("30", "30", "30")
    assert rows["ours"]["lost"] == "0"
    assert rows["bare celery no-op"]["lost"] == "0"
    assert (rows["ours, queued"]["lost"], rows["bare celery no-op, queued"]["lost"]) == ("0", "0")
    assert rows["ours, queued"]["orders_per_s"] != ""
    assert all(rows["ratios"][column.key] != "" for column in orders.RATIO_COLUMNS)
    markdown = (directory / "report.md").read_text()
    assert all(column.heading in markdown for column in orders.COLUMNS + orders.RATIO_COLUMNS)


def test_relay_reports_both_modes_and_relays_every_event_batch_after_batch(results):
    rows = {row["mode"]: row for row in read_csv(results["relay"] / "runs.csv")}

    assert set(rows) == {"one batch", "batch after batch"}
    # 1200 waiting: one batch is OUTBOX_RELAY_BATCH_SIZE (500); a run as beat makes it relays all of them.
    assert (rows["one batch"]["events_sent"], rows["batch after batch"]["events_sent"]) == ("500", "1200")
    assert "| batch after batch |" in (results["relay"] / "report.md").read_text()


def test_profile_reports_queries_round_trips_and_time_per_order(results):
    directory = results["profile"]

    markdown = (directory / "report.md").read_text()
    for section in (
        "SQL statements per order, by task",
        "Redis round trips per order, by task",
        "PostgreSQL transactions per order",
        "message (de)serialization",
        "result backend",
        "Celery overhead per task execution",
    ):
        assert section in markdown
    assert "process_order_task" in (directory / "work.txt").read_text()
    assert "place_order" in (directory / "place.txt").read_text()
