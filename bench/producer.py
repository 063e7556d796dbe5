"""The producer process: enqueues tasks through one engine's client, as fast as it can or at a fixed rate.

    python -m bench.producer bench.queues.rq_jobs --first 0 --count 20000 [--rate 500] --report out.json

Each task carries its index and the time it was enqueued; the report holds when enqueueing started and ended.
"""

import argparse
import importlib
import json
import time


def produce(module: str, *, first: int, count: int, rate: float | None) -> dict:
    enqueue = importlib.import_module(module).enqueue
    started = time.time()
    for offset in range(count):
        if rate:
            delay = started + offset / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        enqueue(first + offset, time.time())
    return {"started": started, "finished": time.time(), "count": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=None, help="tasks per second (default: as fast as possible)")
    parser.add_argument("--report", required=True)
    arguments = parser.parse_args()
    report = produce(arguments.module, first=arguments.first, count=arguments.count, rate=arguments.rate)
    with open(arguments.report, "w") as output:
        json.dump(report, output)


if __name__ == "__main__":
    main()
