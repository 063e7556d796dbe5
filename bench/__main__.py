"""Benchmarks: `python -m bench <name>`. They start their own processes against their own database and Redis."""

import signal
import sys

from bench import engines, orders, profiling, relay, soak, worker

COMMANDS = {
    "engines": engines.main,
    "orders": orders.main,
    "profile": profiling.main,
    "relay": relay.main,
    "soak": soak.main,
    "worker": worker.main,
}


def _stop(signum, frame) -> None:
    # SIGTERM unwinds like Ctrl-C, so every context manager stops the processes it started.
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m bench {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        sys.exit(2)
    signal.signal(signal.SIGTERM, _stop)
    COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
