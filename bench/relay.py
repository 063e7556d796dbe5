"""The outbox relay's throughput: how many waiting events one relay run publishes, one batch per run against batch
after batch within the beat interval (jobs/outbox.py), side by side in one run.

    python -m bench relay [--events 20000] [--runs 3]

Each measurement fills the outbox with --events unsent `order_placed` events (one INSERT, outside the timing) and
times one `relay_outbox()` call, in a process of its own with the production settings, against a fresh database
and a redis-server of the bench's own. "one batch" is that call with no time left (`budget_seconds=0`): exactly
one batch, which is what every run did before; "batch after batch" is the call as beat makes it. The rate of
events the relay keeps up with: one batch per OUTBOX_RELAY_INTERVAL_SECONDS for the first; for the second, its
rate while it runs, since while events wait it keeps relaying through the whole interval and beat sends the next
run then. Report: bench/results/relay-<time>/.
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from bench import environment as env
from bench import report

MODES = {"one batch": 0.0, "batch after batch": None}


def measure(events: int, budget_seconds: float | None) -> dict:
    """In the child process (Django set up): fill the outbox, time one relay run, leave the outbox empty."""
    import django

    django.setup()
    from django.conf import settings

    from jobs import outbox
    from jobs.models import OutboxMessage
    from proj.celery import app

    OutboxMessage.objects.all().delete()
    with app.connection_for_write() as connection:
        connection.default_channel.client.flushdb()
    OutboxMessage.objects.bulk_create(
        OutboxMessage(kind=OutboxMessage.Kind.EVENT, name="order_placed", payload={"order_id": str(n), "total": "1"})
        for n in range(events)
    )
    started = time.perf_counter()
    relayed = outbox.relay_outbox(budget_seconds=budget_seconds)
    seconds = time.perf_counter() - started
    return {
        "events_sent": relayed.events_sent,
        "seconds": seconds,
        "events_per_s": relayed.events_sent / seconds,
        "keeps_up_with_events_per_s": (
            relayed.events_sent / settings.OUTBOX_RELAY_INTERVAL_SECONDS
            if budget_seconds == 0
            else relayed.events_sent / seconds
        ),
    }


def run(*, events: int, runs: int, results_root: Path | None = None) -> Path:
    directory = report.results_directory("relay", results_root)
    rows = []
    with env.work_directory("relay") as work_dir, env.Processes(work_dir) as processes:
        broker_url = env.start_redis_server(processes, work_dir)
        env.fresh_database(log_dir=work_dir)
        environment = env.service_environment(
            broker_url=broker_url, sandbox_url=broker_url.replace("/0", "/1"), work_dir=work_dir
        )
        for run_number in range(1, runs + 1):
            for mode, budget in MODES.items():  # side by side, alternating, so noise hits both alike
                command = [env.PYTHON, "-m", "bench.relay", "--measure", str(events), "--budget", json.dumps(budget)]
                output = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
                rows.append({"mode": mode, "run": run_number, "events": events} | json.loads(output.splitlines()[-1]))
                print(f"run {run_number} {mode}: {rows[-1]['events_sent']} events in {rows[-1]['seconds']:.3f} s")
    report.write_csv(directory / "runs.csv", rows)
    lines = [
        "| mode | events per run (median) | seconds per run (median) | keeps up with (events/s) |",
        "|---|---|---|---|",
    ]
    for mode in MODES:
        mine = [row for row in rows if row["mode"] == mode]
        lines.append(
            f"| {mode} | {statistics.median(row['events_sent'] for row in mine):,.0f} "
            f"| {statistics.median(row['seconds'] for row in mine):.3f} "
            f"| {statistics.median(row['keeps_up_with_events_per_s'] for row in mine):,.0f} |"
        )
    sections = {
        "Machine": report.machine(),
        "Versions": report.versions(["celery", "kombu", "django"]),
        "Configuration": {"events waiting": f"{events:,}", "runs per mode": str(runs)},
    }
    (directory / "report.md").write_text(report.describe("Outbox relay", sections) + "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"report: {directory}")
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench relay", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000, help="events waiting in the outbox (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="measurements per mode (default 3)")
    parser.add_argument("--results", type=Path, default=None, help="results root (default bench/results)")
    parser.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)  # the child's own
    parser.add_argument("--budget", type=json.loads, default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    if arguments.measure is not None:
        print(json.dumps(measure(arguments.measure, arguments.budget)))
        return
    run(events=arguments.events, runs=arguments.runs, results_root=arguments.results)


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    main()
