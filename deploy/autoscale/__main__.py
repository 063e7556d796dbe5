"""`python -m deploy.autoscale simulate|model ...`: see each subcommand's `--help`.

Each subcommand is one `add_*_command` function registering its parser and its `run` callable, and `live`
(real Prometheus, real workers) runs the same controller as the replays.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from deploy.autoscale.controller import DEFAULT_DOWNSCALE_STABILIZATION_SECONDS, DEFAULT_TOLERANCE, HorizontalController
from deploy.autoscale.hpa import InvalidAutoscaler, load_autoscaler
from deploy.autoscale.live import LiveRunError, add_live_command
from deploy.autoscale.model import add_model_command
from deploy.autoscale.simulate import InvalidTrace, read_trace, replay, write_replay

Command = Callable[[argparse.Namespace], int]


def add_controller_flags(parser: argparse.ArgumentParser) -> None:
    """kube-controller-manager's flags that change the arithmetic, with their defaults."""
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="--horizontal-pod-autoscaler-tolerance (default %(default)s)",
    )
    parser.add_argument(
        "--downscale-stabilization",
        type=int,
        default=DEFAULT_DOWNSCALE_STABILIZATION_SECONDS,
        metavar="SECONDS",
        help="--horizontal-pod-autoscaler-downscale-stabilization, for a scale-down rule without a window "
        "(default %(default)s)",
    )


def add_simulate_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "simulate",
        help="replay an HPA against a trace of metric totals",
        description="One controller sync per trace row (CSV `seconds,value`, value = the External metric's total, "
        "empty = no value from the metrics API); prints CSV `seconds,value,replicas` on stdout.",
    )
    parser.add_argument("--hpa", type=Path, required=True, help="the HorizontalPodAutoscaler manifest (YAML)")
    parser.add_argument("--trace", type=Path, required=True, help="CSV with header seconds,value")
    parser.add_argument(
        "--initial-replicas", type=int, default=None, help="replicas before the first sync (default: minReplicas)"
    )
    add_controller_flags(parser)
    parser.set_defaults(run=run_simulate)


def run_simulate(arguments: argparse.Namespace) -> int:
    spec = load_autoscaler(arguments.hpa)
    with arguments.trace.open(newline="") as trace:
        syncs = read_trace(trace)
    controller = HorizontalController(
        tolerance=arguments.tolerance, downscale_stabilization_seconds=arguments.downscale_stabilization
    )
    initial = spec.min_replicas if arguments.initial_replicas is None else arguments.initial_replicas
    write_replay(replay(spec=spec, syncs=syncs, initial_replicas=initial, controller=controller), sys.stdout)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.autoscale", description=__doc__.splitlines()[0])
    subcommands = parser.add_subparsers(dest="command", required=True)
    add_simulate_command(subcommands)
    add_model_command(subcommands)
    add_live_command(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except (InvalidAutoscaler, InvalidTrace, LiveRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
