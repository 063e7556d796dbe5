"""What every benchmark writes: the machine, the versions, the configuration, the runs, their medians with min and
max, as CSV, a Markdown table and PNG charts in a results folder (bench/results/<kind>-<time>/ by default)."""

import csv
import datetime
import importlib.metadata
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import environment

RESULTS_ROOT = environment.ROOT / "bench" / "results"


@dataclass(frozen=True)
class Column:
    """One measured value: its key in a row, its heading, and how many decimals it is shown with."""

    key: str
    heading: str
    decimals: int = 0


def machine() -> dict[str, str]:
    """CPU model, cores, memory and load: a result means little without them."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "cpu": model,
        "cores": f"{psutil.cpu_count(logical=True)} logical, {psutil.cpu_count(logical=False)} physical",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "load average at start (1, 5, 15 min)": load,
    }


def versions(packages: Sequence[str], *, database: bool = True) -> dict[str, str]:
    found = {"python": platform.python_version(), "redis-server": environment.redis_version()}
    if database:
        found["postgresql"] = environment.postgres_version()
    for package in packages:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def percentile(values: Sequence[float], percent: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * percent // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def summarize(rows: list[dict], *, group_by: str, columns: Sequence[Column]) -> list[dict]:
    """Per group (in first-seen order): the median, min and max of every column over its runs."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row[group_by], []).append(row)
    summary = []
    for name, group in groups.items():
        line: dict = {group_by: name, "runs": len(group)}
        for column in columns:
            values = [row[column.key] for row in group if row.get(column.key) is not None]
            line[column.key] = statistics.median(values) if values else None
            line[f"{column.key}_min"] = min(values) if values else None
            line[f"{column.key}_max"] = max(values) if values else None
        summary.append(line)
    return summary


def _number(value: float | None, decimals: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{decimals}f}"


def cell(line: dict, column: Column) -> str:
    """`median (min-max)`, or only the value when every run agrees or there was one run."""
    median = _number(line[column.key], column.decimals)
    low, high = _number(line[f"{column.key}_min"], column.decimals), _number(line[f"{column.key}_max"], column.decimals)
    return median if low == high else f"{median} ({low}-{high})"


def markdown_table(summary: list[dict], *, group_by: str, columns: Sequence[Column]) -> str:
    headings = [group_by, *(column.heading for column in columns)]
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    for line in summary:
        lines.append("| " + " | ".join([str(line[group_by]), *(cell(line, column) for column in columns)]) + " |")
    return "\n".join(lines)


def results_directory(kind: str, root: Path | None = None) -> Path:
    stamp = datetime.datetime.now(tz=datetime.UTC).strftime("%Y%m%d-%H%M%S")
    directory = (root or RESULTS_ROOT) / f"{kind}-{stamp}"
    directory.mkdir(parents=True, exist_ok=False)
    return directory


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as output:
        writer = csv.DictWriter(output, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as rows:
        return list(csv.DictReader(rows))


def describe(title: str, sections: dict[str, dict[str, str]]) -> str:
    """The Markdown header of a report: machine, versions, configuration, one bullet list each."""
    parts = [f"# {title}", ""]
    for heading, values in sections.items():
        parts += [f"## {heading}", ""] + [f"- {key}: {value}" for key, value in values.items()] + [""]
    return "\n".join(parts)


def bar_chart(path: Path, *, title: str, summary: list[dict], group_by: str, columns: Sequence[Column],
              ylabel: str, log_scale: bool = False) -> None:  # fmt: skip
    """Grouped bars (one group per engine or variant, one bar per column) with min-max error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [line[group_by] for line in summary]
    width = 0.8 / len(columns)
    figure, axes = plt.subplots(figsize=(max(6, 1.4 * len(names) * max(1, len(columns) / 2)), 4.5))
    for position, column in enumerate(columns):
        medians = [line[column.key] or 0 for line in summary]
        below = [max(0, (line[column.key] or 0) - (line[f"{column.key}_min"] or 0)) for line in summary]
        above = [max(0, (line[f"{column.key}_max"] or 0) - (line[column.key] or 0)) for line in summary]
        offsets = [index + (position - (len(columns) - 1) / 2) * width for index in range(len(names))]
        axes.bar(offsets, medians, width, yerr=[below, above], capsize=3, label=column.heading)
    axes.set_xticks(range(len(names)), names, rotation=20, ha="right")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if log_scale:
        axes.set_yscale("log")
    if len(columns) > 1:
        axes.legend(fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
