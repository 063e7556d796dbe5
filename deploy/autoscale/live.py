"""`live`: the orders pool's HPA driving real workers on this machine, its metric read from a real Prometheus.

Everything is the run's own: a broker redis-server and one for the payment sandbox's ledger, a fresh database,
gunicorn serving the API and /metrics, beat, one worker for the central queues, and the orders pool's pods - each
the worker-orders container of the rendered production overlay (deploy/autoscale/pods.py). Prometheus
(/usr/bin/prometheus, on the loopback, its own data directory) scrapes the web's /metrics with the label
`namespace="shop"` and evaluates deploy/prometheus/shop.rules.yml. Every sync period the controller asks
Prometheus' HTTP API the query prometheus-adapter builds for the HPA of hpa-worker-orders.yaml, sums the series as
the HPA sums an External metric, and `controller.py` decides the replicas; a scale-up starts pods, a scale-down
sends SIGTERM to the newest ones without waiting (a terminating pod no longer counts, as in Kubernetes). HTTP
clients place orders in steps (`--phases`). Then the run waits until every order is final and its effects landed,
counts lost and duplicated ones as `python -m bench soak` does, and writes a CSV, a PNG and a summary.

It exits 1 unless nothing was lost or done twice and the pool scaled up and down at least once each.
"""

import argparse
import contextlib
import csv
import itertools
import json
import math
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from bench import environment as env
from bench import orders as bench_orders
from bench import placement, soak
from bench import report as bench_report
from deploy import manifests
from deploy.autoscale.controller import HorizontalController
from deploy.autoscale.hpa import AutoscalerSpec, Behavior, ExternalMetric, load_autoscaler
from deploy.autoscale.model import SYNC_PERIOD_SECONDS
from deploy.autoscale.pods import Cluster, ManifestPods, Pod, scale_down_victims
from deploy.autoscale.quantity import to_milli

AUTOSCALING = manifests.COMPONENTS / "autoscaling"
HPA = AUTOSCALING / "hpa-worker-orders.yaml"
ADAPTER_CONFIG = AUTOSCALING / "prometheus-adapter" / "config.yaml"
RULES = manifests.ROOT / "deploy" / "prometheus" / "shop.rules.yml"
PODMONITORS = manifests.ROOT / "deploy" / "k8s" / "base" / "podmonitors.yaml"
AUTOSCALING_RULE_GROUP = "shop-autoscaling"
PROMETHEUS = "/usr/bin/prometheus"
ORDERS_CONTAINER = "worker-orders"
DEFAULT_DATABASE = "shop_live"
# The documented run (docs/autoscaling.md, "A live run"): a pod here completes about 2 orders/s (2 processes, 1 s
# per charge), so 2 orders/s x the 30 s drain objective = 60 messages per pod; 2 orders/s is what the two pods of
# minReplicas carry at ease, 10 orders/s what they cannot (backlog grows 6/s) and 8 pods can; 8 pods is what the
# two cores hold beside web, beat, Prometheus and the clients. The last phase lasts past the shipped scale-down
# (5 minutes' window, then a step a minute), so pods are sent SIGTERM while orders flow.
DEFAULT_PHASES = "60:2,150:10,540:2"
DEFAULT_TARGET = "60"
DEFAULT_MAX_REPLICAS = 8
DEFAULT_PAYMENT_LATENCY_MS = 1000
DEFAULT_OUTPUT = manifests.ROOT / "docs" / "autoscaling" / "live-run"
# The central pools (maintenance: the outbox relay and housekeeping; analytics; heavy) as one plain worker: they
# are not what is scaled, and one process group for them leaves the two cores to the orders pool.
CENTRAL_QUEUES = "maintenance,analytics,heavy"
# A client retries one order under its Idempotency-Key this long: longer than any pause this run causes.
CLIENT_RETRY_SECONDS = 120
TICK_SECONDS = 0.25
READY_TIMEOUT_SECONDS = 120
# The wait for the end gives up when nothing has moved for this long (bench soak's, for the same reasons).
SETTLE_STALL_SECONDS = soak.SETTLE_STALL_SECONDS
# Prometheus keeps its data one day: a run is minutes, and its directory is the run's.
PROMETHEUS_RETENTION = "1d"


# Why a value of the run may differ from production's, as the report says it.
WHY_TARGET = (
    "a pod here completes what its 2 processes do with the payment latency, not 60 orders/s: the target is the "
    "shipped derivation (a pod's rate x the drain objective) with this pod's rate"
)
WHY_REPLICAS = "as many pods as this machine (2 cores) holds beside the rest of the run"
WHY_MECHANISM = "a changed interval: the run proves the mechanism; the delays it measures are not production's"
WHY_LATENCY = (
    "the sandbox answers at once by default; with a provider's latency one pod is slow enough that a backlog "
    "builds at a rate this machine can place"
)


class LiveRunError(RuntimeError):
    """Raised when the run cannot take place (Prometheus does not start, or never answers the query)."""


# --- what production ships ---------------------------------------------------------------------------------------


def shipped_scrape_seconds() -> int:
    """The web PodMonitor's scrape interval: how often production's Prometheus reads /metrics."""
    for document in yaml.safe_load_all(PODMONITORS.read_text()):
        if document and document["metadata"]["name"] == "web":
            return parse_duration(document["spec"]["podMetricsEndpoints"][0]["interval"])
    raise LiveRunError(f"{PODMONITORS} has no web PodMonitor")


def shipped_rule_seconds() -> int:
    """The evaluation interval of the rule group that records the backlog."""
    return parse_duration(_autoscaling_group(yaml.safe_load(RULES.read_text()))["interval"])


def _autoscaling_group(rules: dict) -> dict:
    (group,) = [group for group in rules["groups"] if group["name"] == AUTOSCALING_RULE_GROUP]
    return group


def parse_duration(text: str) -> int:
    """A Prometheus duration of whole seconds or minutes (`15s`, `1m`) as seconds."""
    units = {"s": 1, "m": 60}
    if not text or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"unsupported duration {text!r}")
    return int(text[:-1]) * units[text[-1]]


# --- the adapter's query -----------------------------------------------------------------------------------------


def label_matchers(*, namespace: str, selector: dict[str, Any]) -> str:
    """<<.LabelMatchers>> as prometheus-adapter fills it for an External metric: the HPA's namespace, then its
    selector (`matchLabels` as equalities, an `In` as a regex of its values, or an equality for one value)."""
    matchers = [f'namespace="{namespace}"']
    for key, value in sorted((selector.get("matchLabels") or {}).items()):
        matchers.append(f'{key}="{value}"')
    for expression in selector.get("matchExpressions") or []:
        if expression["operator"] != "In":
            raise ValueError(f"operator {expression['operator']!r}: the run models In and matchLabels only")
        values = expression["values"]
        operator = "=" if len(values) == 1 else "=~"
        matchers.append(f'{expression["key"]}{operator}"{"|".join(values)}"')
    return ",".join(matchers)


def adapter_query(spec: AutoscalerSpec, adapter_config: dict) -> str:
    """The PromQL prometheus-adapter sends for the HPA's External metric: the rule naming the metric, its series
    (the metric name of its seriesQuery) and the HPA's label matchers put into its metricsQuery."""
    for rule in adapter_config["externalRules"]:
        name = rule["name"]
        series = rule["seriesQuery"].split("{", 1)[0].strip("'\" ")
        exposed = name.get("as") or series
        if exposed == spec.metric.name:
            if spec.namespace is None:
                raise ValueError(f"the HPA {spec.name} has no namespace: the adapter would select none")
            matchers = label_matchers(namespace=spec.namespace, selector=spec.metric.selector)
            return rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
    raise ValueError(f"no externalRules entry of the adapter serves {spec.metric.name}")


def metric_total_milli(response: dict) -> int | None:
    """The External metric's total as the HPA computes it from the adapter (the sum of every series, in
    milli-units); None when Prometheus returned no series, as the metrics API then answers nothing."""
    if response.get("status") != "success":
        raise LiveRunError(f"Prometheus answered {response}")
    result = response["data"]["result"]
    if not result:
        return None
    return sum(to_milli(sample["value"][1]) for sample in result)


# --- Prometheus --------------------------------------------------------------------------------------------------


def prometheus_version() -> str:
    output = subprocess.run([PROMETHEUS, "--version"], capture_output=True, text=True, check=True)  # noqa: S603
    return (output.stdout or output.stderr).splitlines()[0]


class Prometheus:
    """A Prometheus of the run's own scraping one target, with the shop's rules."""

    def __init__(self, *, processes: env.Processes, work_dir: Path, scrape_seconds: int, rule_seconds: int) -> None:
        self.processes = processes
        self.work_dir = work_dir
        self.scrape_seconds = scrape_seconds
        self.rule_seconds = rule_seconds
        self.port = env.free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def rules_file(self) -> Path:
        """The shipped rules; a copy with the autoscaling group's interval changed when the run shortens it."""
        if self.rule_seconds == shipped_rule_seconds():
            return RULES
        rules = yaml.safe_load(RULES.read_text())
        _autoscaling_group(rules)["interval"] = f"{self.rule_seconds}s"
        path = self.work_dir / "shop.rules.yml"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
        return path

    def start(self, *, target: str) -> None:
        """Scrape `target` (host:port) as the web pods are scraped: /metrics, labelled with their namespace."""
        config = {
            "global": {"scrape_interval": f"{self.scrape_seconds}s", "evaluation_interval": f"{self.rule_seconds}s"},
            "rule_files": [str(self.rules_file())],
            "scrape_configs": [
                {
                    "job_name": "shop-web",
                    "metrics_path": "/metrics",
                    "scrape_interval": f"{self.scrape_seconds}s",
                    "scrape_timeout": f"{min(10, self.scrape_seconds)}s",  # the PodMonitor's 10 s, or the interval
                    "static_configs": [{"targets": [target], "labels": {"namespace": "shop"}}],
                }
            ],
        }
        config_path = self.work_dir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        data = self.work_dir / "prometheus-data"
        data.mkdir()
        command = [
            PROMETHEUS,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data}",
            f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        process = self.processes.start(command, environment=dict(os.environ), name="prometheus")
        env.wait_for(
            lambda: self._is_ready() or process.poll() is not None,
            timeout=READY_TIMEOUT_SECONDS,
            interval=0.2,
            what="Prometheus to be ready",
        )
        if process.poll() is not None:
            raise LiveRunError(f"Prometheus exited ({process.returncode}); see {self.work_dir}/prometheus.log")

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:  # noqa: S310 - loopback
                return response.status == 200
        except OSError:
            return False

    def query(self, expression: str) -> dict:
        """An instant query through the HTTP API, as prometheus-adapter asks it."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expression})}"
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our Prometheus on the loopback
            return json.loads(response.read())


# --- the load ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    seconds: float
    orders_per_second: float


def parse_phases(text: str) -> list[Phase]:
    """`60:2,120:8,60:2`: each phase's seconds and orders per second."""
    phases = []
    for item in text.split(","):
        seconds, separator, rate = item.strip().partition(":")
        if not separator:
            raise argparse.ArgumentTypeError(f"phase {item!r} is not SECONDS:ORDERS_PER_SECOND")
        phase = Phase(float(seconds), float(rate))
        if phase.seconds <= 0 or phase.orders_per_second < 0:
            raise argparse.ArgumentTypeError(f"phase {item!r}: seconds must be positive, the rate not negative")
        phases.append(phase)
    return phases


def step_up_and_down(phases: Sequence[Phase]) -> tuple[float | None, float | None]:
    """Seconds from the load's start to its first step up, and to the first step down after it."""
    step_up = step_down = None
    start = 0.0
    for previous, phase in itertools.pairwise(phases):
        start += previous.seconds
        if step_up is None and phase.orders_per_second > previous.orders_per_second:
            step_up = start
        elif step_up is not None and phase.orders_per_second < previous.orders_per_second:
            step_down = start
            break
    return step_up, step_down


@dataclass
class LoadGenerator:
    """Open-loop customers: a ticker releases orders at each phase's rate, `clients` HTTP clients place them
    (bench.placement's client: POST /api/orders with an Idempotency-Key, retried under it)."""

    url: str
    phases: Sequence[Phase]
    clients: int
    skus: list[str]
    asked: int = 0
    ids: list[str] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    retries: Counter = field(default_factory=Counter)
    most_behind: int = 0  # orders released and not yet taken by a client: whether the clients kept up
    _tickets: queue.Queue = field(default_factory=queue.Queue)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def placed(self) -> int:
        with self._lock:
            return len(self.ids)

    def start(self, started_at: float) -> None:
        self._threads = [threading.Thread(target=self._release, args=(started_at,), daemon=True)]
        self._threads += [
            threading.Thread(target=self._client, args=(number,), daemon=True) for number in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()

    def is_done(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()

    def _release(self, started_at: float) -> None:
        """Each phase's orders at even intervals from its start: round(seconds x rate) of them, on the clock."""
        phase_start = started_at
        for phase in self.phases:
            for number in range(round(phase.seconds * phase.orders_per_second)):
                time.sleep(max(0.0, phase_start + number / phase.orders_per_second - time.monotonic()))
                self._tickets.put(self.asked)
                self.asked += 1
                self.most_behind = max(self.most_behind, self._tickets.qsize())
            phase_start += phase.seconds
            time.sleep(max(0.0, phase_start - time.monotonic()))
        for _ in range(self.clients):
            self._tickets.put(None)

    def _client(self, number: int) -> None:
        placer = placement.HttpPlacer(self.url, retry_seconds=CLIENT_RETRY_SECONDS)
        chooser = random.Random(number)  # noqa: S311 - baskets, not secrets
        try:
            while (index := self._tickets.get()) is not None:
                try:
                    error = placer.place(placement.order_payload(index, self.skus, chooser))
                except Exception as exception:  # noqa: BLE001 - counted and reported, never hidden
                    error = f"{type(exception).__name__}: {exception}"[:200]
                with self._lock:
                    if error:
                        self.errors[error] += 1
                    elif placer.order_id:
                        self.ids.append(placer.order_id)
        finally:
            placer.close()
            with self._lock:
                self.retries.update(placer.retries)


# --- the run -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    phases: tuple[Phase, ...]
    clients: int
    target: str | None
    min_replicas: int | None
    max_replicas: int | None
    scale_down_window: int | None
    sync_seconds: int
    scrape_seconds: int
    rule_seconds: int
    payment_latency_ms: int
    tail_seconds: float
    settle_seconds: float
    database: str
    output: Path


@dataclass(frozen=True)
class SyncRecord:
    seconds: float
    backlog_milli: int | None
    replicas: int
    placed: int
    completed: int


@dataclass
class Run:
    """What happened: one record per sync, the scale events, the pods' lives."""

    syncs: list[SyncRecord] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    scale_ups: int = 0
    scale_downs: int = 0
    terminated: list[dict] = field(default_factory=list)  # each SIGTERMed pod: seconds to exit, exit status
    replaced: int = 0  # pods that exited by themselves and were replaced, as a ReplicaSet does
    first_scale_up_at: float | None = None
    first_new_pod_ready_at: float | None = None
    started_at: float = field(default_factory=time.monotonic)

    def record(self, line: str) -> None:
        line = f"{time.monotonic() - self.started_at:7.1f}s  {line}"
        self.events.append(line)
        print(f"  {line}", flush=True)


def autoscaler(settings: Settings) -> AutoscalerSpec:
    """The shipped HPA, with the overrides the run was given; its behavior as shipped but for a shorter scale-down
    window when asked."""
    spec = load_autoscaler(HPA)
    if settings.target is not None:
        spec = replace(spec, metric=replace(spec.metric, target_average_milli=to_milli(settings.target)))
    if settings.min_replicas is not None:
        spec = replace(spec, min_replicas=settings.min_replicas)
    if settings.max_replicas is not None:
        spec = replace(spec, max_replicas=settings.max_replicas)
    if settings.scale_down_window is not None and spec.behavior is not None:
        scale_down = replace(spec.behavior.scale_down, stabilization_window_seconds=settings.scale_down_window)
        spec = replace(spec, behavior=Behavior(scale_up=spec.behavior.scale_up, scale_down=scale_down))
    if not 0 < spec.min_replicas <= spec.max_replicas:
        raise LiveRunError(f"replicas {spec.min_replicas}..{spec.max_replicas}: need 0 < min <= max")
    return spec


def differences(settings: Settings, spec: AutoscalerSpec) -> list[dict[str, str]]:
    """Every value of the run that differs from what production ships, with what it means for the result."""
    shipped = load_autoscaler(HPA)
    rows = [
        ("averageValue (messages per pod)", _quantity(shipped.metric), _quantity(spec.metric), WHY_TARGET),
        ("minReplicas", shipped.min_replicas, spec.min_replicas, WHY_REPLICAS),
        ("maxReplicas", shipped.max_replicas, spec.max_replicas, WHY_REPLICAS),
        ("scaleDown.stabilizationWindowSeconds", _window(shipped), _window(spec), WHY_MECHANISM),
        ("sync period (s)", SYNC_PERIOD_SECONDS, settings.sync_seconds, WHY_MECHANISM),
        ("scrape interval (s)", shipped_scrape_seconds(), settings.scrape_seconds, WHY_MECHANISM),
        ("rule group interval (s)", shipped_rule_seconds(), settings.rule_seconds, WHY_MECHANISM),
        ("PAYMENT_SANDBOX_LATENCY_MS", 0, settings.payment_latency_ms, WHY_LATENCY),
    ]
    return [
        {"setting": name, "shipped": str(shipped_value), "here": str(value), "why": why}
        for name, shipped_value, value, why in rows
        if shipped_value != value
    ]


def _quantity(metric: ExternalMetric) -> str:
    return f"{Decimal(metric.target_average_milli) / 1000:g}"


def _window(spec: AutoscalerSpec) -> int | None:
    return None if spec.behavior is None else spec.behavior.scale_down.stabilization_window_seconds


def completed_orders(connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders_order WHERE status = 'completed'")
        return cursor.fetchone()[0]


def live(settings: Settings, *, work_dir: Path) -> dict:
    """One live run, start to finish; its summary."""
    spec = autoscaler(settings)
    query = adapter_query(spec, yaml.safe_load(ADAPTER_CONFIG.read_text()))
    os.environ["BENCH_DATABASE"] = settings.database  # bench.environment's and soak.count's database
    run = Run()
    machine = bench_report.machine()  # before the run loads the machine: its load average is the others'
    with env.Processes(work_dir) as processes, contextlib.closing(_connect_after_fresh(work_dir)) as connection:
        broker = env.RedisServer(processes, work_dir, name="broker")
        sandbox = env.RedisServer(processes, work_dir, name="sandbox")
        mail_log = work_dir / "mail.log"
        environment = env.service_environment(broker_url=broker.url, sandbox_url=sandbox.url, work_dir=work_dir)
        url = start_service(processes, work_dir, environment)
        prometheus = Prometheus(
            processes=processes,
            work_dir=work_dir,
            scrape_seconds=settings.scrape_seconds,
            rule_seconds=settings.rule_seconds,
        )
        prometheus.start(target=url.removeprefix("http://"))
        pods_of = ManifestPods(
            container_name=ORDERS_CONTAINER,
            processes=processes,
            work_dir=work_dir,
            cluster=Cluster(
                database_url=env.database_url(), broker_url=broker.url, sandbox_url=sandbox.url, mail_log=mail_log
            ),
            experiment={"PAYMENT_SANDBOX_LATENCY_MS": str(settings.payment_latency_ms)},
        )
        pods = [pods_of.start() for _ in range(spec.min_replicas)]
        env.wait_for(
            lambda: all(pod.is_ready for pod in pods),
            timeout=READY_TIMEOUT_SECONDS,
            interval=0.2,
            what="the first pods to be ready",
        )
        try:
            env.wait_for(
                lambda: metric_total_milli(prometheus.query(query)) is not None,
                timeout=READY_TIMEOUT_SECONDS + 2 * (settings.scrape_seconds + settings.rule_seconds),
                interval=0.5,
                what="Prometheus to answer the adapter's query",
            )
        except TimeoutError as error:
            raise LiveRunError(
                f"{error} Its scrape targets: {prometheus.url}/targets (BENCH_KEEP_TEMP=1 keeps {work_dir})"
            ) from error

        load = LoadGenerator(url=url, phases=settings.phases, clients=settings.clients, skus=bench_orders._skus())
        run.started_at = time.monotonic()
        for pod in pods:
            pod.ready_at = run.started_at  # ready before the run began
        run.record(f"query: {query}")
        run.record(f"{len(pods)} pods ready; load begins: {_describe_phases(settings.phases)}")
        load.start(run.started_at)
        terminating = control(
            settings=settings,
            spec=spec,
            query=query,
            prometheus=prometheus,
            pods_of=pods_of,
            pods=pods,
            load=load,
            connection=connection,
            run=run,
        )
        settled = _settle(connection, settings.settle_seconds, run)
        while terminating:
            terminating = [pod for pod in terminating if not _reaped(pods_of, pod, run)]
            time.sleep(TICK_SECONDS)
        counts = soak.count(set(load.ids), sandbox_url=sandbox.url, mail_log=mail_log)
    return summarise(settings, spec, run, load, counts, settled=settled, query=query) | {"machine": machine}


def start_service(processes: env.Processes, work_dir: Path, environment: dict[str, str]) -> str:
    """gunicorn (the API and /metrics), beat (the outbox relay, the reconcilers) and one plain worker for the
    central queues; returns the API's URL."""
    url = bench_orders._start_web(processes, bench_orders.VARIANTS["ours"], environment)
    beat = [env.PYTHON, "-m", "celery", "-A", "proj", "beat", "--loglevel", "WARNING",
            "--schedule", str(work_dir / "beat-schedule")]  # fmt: skip
    processes.start(beat, environment=environment, name="beat")
    central = [env.PYTHON, "-m", "celery", "-A", "proj", "worker", "--queues", CENTRAL_QUEUES, "--concurrency", "2",
               "--loglevel", "INFO", f"--hostname=central@{socket.gethostname()}"]  # fmt: skip
    processes.start(central, environment=environment, name="central")
    return url


def control(
    *,
    settings: Settings,
    spec: AutoscalerSpec,
    query: str,
    prometheus: Prometheus,
    pods_of: ManifestPods,
    pods: list[Pod],
    load: LoadGenerator,
    connection,
    run: Run,
) -> list[Pod]:
    """The controller's loop, while the load runs and after it until the pool is back at minReplicas (or the tail
    ran out); returns the pods still terminating. Between syncs it notes ready pods, reaps terminated ones and, as
    a ReplicaSet does, replaces a pod that exited by itself."""
    controller = HorizontalController()
    terminating: list[Pod] = []
    load_ended_at: float | None = None
    next_sync = run.started_at
    while True:
        now = time.monotonic()
        _notice_ready(pods, run)
        terminating = [pod for pod in terminating if not _reaped(pods_of, pod, run)]
        for pod in [pod for pod in pods if pod.process.poll() is not None]:
            pods_of.processes.stop(pod.process, grace=0)  # its process group, pool children included
            pods.remove(pod)
            run.replaced += 1
            pods.append(pods_of.start())
            run.record(f"{pod.name} exited by itself (status {pod.process.returncode}): replaced")
        if now >= next_sync:
            next_sync += settings.sync_seconds
            total = metric_total_milli(prometheus.query(query))
            result = controller.sync(
                spec=spec,
                now=Decimal(f"{now - run.started_at:.3f}"),
                current_replicas=len(pods),
                metric_total_milli=total,
            )
            _scale(pods_of, pods, terminating, result.replicas, run)
            run.syncs.append(
                SyncRecord(
                    seconds=now - run.started_at,
                    backlog_milli=total,
                    replicas=len(pods),
                    placed=load.placed,
                    completed=completed_orders(connection),
                )
            )
        if load_ended_at is None and load.is_done():
            load_ended_at = now
            run.record(f"load ends: {load.placed} orders placed")
        if load_ended_at is not None:
            if len(pods) == spec.min_replicas and not terminating and run.scale_downs > 0:
                run.record("scaling ends: back at minReplicas")
                return terminating
            if now - load_ended_at > settings.tail_seconds:
                run.record(f"scaling ends: {settings.tail_seconds:g} s after the load, at {len(pods)} replicas")
                return terminating
        time.sleep(TICK_SECONDS)


def _connect_after_fresh(work_dir: Path):
    env.fresh_database(log_dir=work_dir)
    return env.database()


def _describe_phases(phases: Sequence[Phase]) -> str:
    return ", ".join(f"{phase.orders_per_second:g}/s for {phase.seconds:g} s" for phase in phases)


def _notice_ready(pods: list[Pod], run: Run) -> None:
    for pod in pods:
        if pod.ready_at is None and pod.is_ready:
            pod.ready_at = time.monotonic()
            if run.first_scale_up_at is not None and run.first_new_pod_ready_at is None:
                run.first_new_pod_ready_at = pod.ready_at - run.started_at
            run.record(f"{pod.name} ready {pod.ready_at - pod.started_at:.1f} s after it started")


def _reaped(pods_of: ManifestPods, pod: Pod, run: Run) -> bool:
    if not pods_of.reap(pod):
        return False
    assert pod.terminating_since is not None  # noqa: S101 - terminate set it
    assert pod.exited_at is not None  # noqa: S101 - reap set it
    seconds = pod.exited_at - pod.terminating_since
    status = pod.process.returncode
    run.terminated.append({"pod": pod.name, "seconds_to_exit": round(seconds, 1), "exit_status": status})
    run.record(f"{pod.name} exited {seconds:.1f} s after SIGTERM (status {status})")
    return True


def _scale(pods_of: ManifestPods, pods: list[Pod], terminating: list[Pod], desired: int, run: Run) -> None:
    """Bring the pods to `desired` as the Deployment's ReplicaSet would: start new ones, or SIGTERM the ones it
    removes first, without waiting for them (they stop counting at once)."""
    if desired > len(pods):
        started = [pods_of.start() for _ in range(desired - len(pods))]
        run.record(f"scale up {len(pods)} -> {desired}: started {', '.join(pod.name for pod in started)}")
        pods.extend(started)
        run.scale_ups += 1
        if run.first_scale_up_at is None:
            run.first_scale_up_at = time.monotonic() - run.started_at
    elif desired < len(pods):
        victims = scale_down_victims(pods, len(pods) - desired)
        for pod in victims:
            pods_of.terminate(pod)
            pods.remove(pod)
            terminating.append(pod)
        run.record(f"scale down {len(pods) + len(victims)} -> {desired}: SIGTERM {', '.join(p.name for p in victims)}")
        run.scale_downs += 1


def _settle(connection, settle_seconds: float, run: Run) -> bool:
    """Wait until every order is final and every effect landed (bench soak's test), or nothing moves any more."""
    deadline = time.monotonic() + settle_seconds
    last_change, last_seen = time.monotonic(), None
    while not soak._settled(progress := soak._progress(connection)):
        if progress != last_seen:
            last_change, last_seen = time.monotonic(), progress
        elif time.monotonic() - last_change > SETTLE_STALL_SECONDS or time.monotonic() > deadline:
            run.record(f"gave up waiting: {soak._describe(progress, 0).strip()}")
            return False
        time.sleep(0.5)
    run.record("settled: every order final and every effect landed")
    return True


# --- the report --------------------------------------------------------------------------------------------------


def summarise(
    settings: Settings, spec: AutoscalerSpec, run: Run, load: LoadGenerator, counts: dict, *, settled: bool, query: str
) -> dict:
    step_up, step_down = step_up_and_down(settings.phases)
    backlogs = [(sync.seconds, sync.backlog_milli / 1000) for sync in run.syncs if sync.backlog_milli is not None]
    peak_at, peak = max(backlogs, key=lambda item: item[1], default=(None, None))
    target = spec.metric.target_average_milli / 1000
    # Drained: the first sync after the peak whose backlog is at most one pod's target.
    drained_at = next(
        (seconds for seconds, backlog in backlogs if peak_at is not None and seconds > peak_at and backlog <= target),
        None,
    )

    def since_step_up(moment: float | None) -> float | None:
        return None if moment is None or step_up is None else round(moment - step_up, 1)

    return {
        "placed": counts["placed"],
        "completed": counts["completed"],
        "failed": counts["failed"],
        "cancelled": counts["cancelled"],
        "lost": counts["lost"],
        "duplicated": counts["duplicated"],
        "lost_effects": counts["lost_effects"],
        "duplicates": counts["duplicates"],
        "missing": counts["missing"],
        "emails": counts["emails"],
        "charges": counts["charges"],
        "settled": settled,
        "placement_errors": dict(load.errors),
        "placement_retries": dict(load.retries),
        "orders_released_not_yet_sent_at_most": load.most_behind,
        "scale_ups": run.scale_ups,
        "scale_downs": run.scale_downs,
        "pods_sent_sigterm": len(run.terminated),
        "terminated_pods": run.terminated,
        "pods_replaced_after_exiting_by_themselves": run.replaced,
        "max_replicas_seen": max((sync.replicas for sync in run.syncs), default=0),
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "target_per_pod": target,
        "peak_backlog": peak,
        "syncs": len(run.syncs),
        "syncs_with_metric": len(backlogs),
        "step_up_at_seconds": step_up,
        "step_down_at_seconds": step_down,
        "first_scale_up_after_step_up_seconds": since_step_up(run.first_scale_up_at),
        "first_new_pod_ready_after_step_up_seconds": since_step_up(run.first_new_pod_ready_at),
        "backlog_drained_after_step_up_seconds": since_step_up(drained_at),
        "query": query,
        "prometheus": prometheus_version(),
        "settings": {
            "phases": _describe_phases(settings.phases),
            "clients": settings.clients,
            "sync_seconds": settings.sync_seconds,
            "scrape_seconds": settings.scrape_seconds,
            "rule_seconds": settings.rule_seconds,
            "payment_latency_ms": settings.payment_latency_ms,
            "scale_down_window_seconds": _window(spec),
        },
        "differences_from_production": differences(settings, spec),
        "events": run.events,
        "records": [
            {
                "seconds": round(sync.seconds, 1),
                "backlog": None if sync.backlog_milli is None else sync.backlog_milli / 1000,
                "replicas": sync.replicas,
                "placed": sync.placed,
                "completed": sync.completed,
            }
            for sync in run.syncs
        ],
    }


def passed(summary: dict) -> bool:
    """Nothing lost or done twice, scale-downs included, and the pool really scaled both ways."""
    return (
        summary["lost"] == 0
        and summary["duplicated"] == 0
        and summary["lost_effects"] == 0
        and summary["scale_ups"] >= 1
        and summary["pods_sent_sigterm"] >= 1
    )


def write_csv(summary: dict, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["seconds", "backlog", "replicas", "placed", "completed"])
        for record in summary["records"]:
            backlog = "" if record["backlog"] is None else f"{record['backlog']:g}"
            writer.writerow(
                [f"{record['seconds']:.1f}", backlog, record["replicas"], record["placed"], record["completed"]]
            )


def draw_chart(summary: dict, phases: Sequence[Phase], path: Path) -> None:
    """Orders/s asked, the backlog the controller read, and the replicas it decided, sync by sync."""
    import matplotlib  # only the report draws: the run itself needs no matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = summary["records"]
    seconds = [record["seconds"] for record in records]
    figure, axes = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True)
    starts, rates, start = [], [], 0.0
    for phase in phases:
        starts.append(start)
        rates.append(phase.orders_per_second)
        start += phase.seconds
    axes[0].step([*starts, start, max([start, *seconds])], [*rates, 0.0, 0.0], color="black", where="post")
    axes[0].set_ylabel("orders/s placed")
    # A sync without a metric is a gap in the line, not a zero.
    backlogs = [math.nan if record["backlog"] is None else record["backlog"] for record in records]
    axes[1].step(seconds, backlogs, color="tab:red", where="post", linewidth=1)
    axes[1].plot(seconds, backlogs, color="tab:red", marker=".", linestyle="none")
    axes[1].set_ylabel("backlog read (messages)")
    replicas = [record["replicas"] for record in records]
    axes[1].step(
        seconds,
        [count * summary["target_per_pod"] for count in replicas],
        where="post",
        color="tab:gray",
        linestyle="--",
        linewidth=0.8,
        label="replicas x target",
    )
    axes[1].legend(loc="upper right")
    axes[2].step(seconds, replicas, color="tab:blue", where="post")
    axes[2].axhline(summary["max_replicas"], color="tab:gray", linestyle=":", linewidth=0.8)
    axes[2].set_ylabel("replicas")
    axes[2].set_ylim(0, summary["max_replicas"] + 1)
    axes[2].set_xlabel("seconds since the load began")
    axes[0].set_title(
        f"live run: placed {summary['placed']}, completed {summary['completed']}, lost {summary['lost']}, "
        f"duplicated {summary['duplicated']}; {summary['scale_ups']} scale-ups, {summary['scale_downs']} scale-downs"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def format_summary(summary: dict) -> str:
    lines = [
        "| placed | completed | failed | lost | duplicated | lost effects | scale-ups | scale-downs | max replicas "
        "| peak backlog |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {summary['placed']} | {summary['completed']} | {summary['failed']} | {summary['lost']} "
        f"| {summary['duplicated']} | {summary['lost_effects']} | {summary['scale_ups']} | {summary['scale_downs']} "
        f"| {summary['max_replicas_seen']} | {summary['peak_backlog']:g} |"
        if summary["peak_backlog"] is not None
        else "| (no metric was ever read) |",
        "",
        f"- syncs: {summary['syncs']}, with a metric from Prometheus: {summary['syncs_with_metric']}",
        f"- pods sent SIGTERM: {summary['pods_sent_sigterm']} (seconds to exit, status: "
        + ", ".join(f"{pod['seconds_to_exit']:g} s {pod['exit_status']}" for pod in summary["terminated_pods"])
        + ")",
        f"- from the step-up: first scale-up {summary['first_scale_up_after_step_up_seconds']} s, first new pod "
        f"ready {summary['first_new_pod_ready_after_step_up_seconds']} s, backlog drained (at most one pod's "
        f"target) {summary['backlog_drained_after_step_up_seconds']} s",
        f"- placement errors: {summary['placement_errors'] or 'none'}; "
        f"retried: {summary['placement_retries'] or 'none'}"
        f"; most orders waiting for a free client: {summary['orders_released_not_yet_sent_at_most']}",
        f"- settled: {'yes' if summary['settled'] else 'NO'}; pods replaced after exiting by themselves: "
        f"{summary['pods_replaced_after_exiting_by_themselves']}",
        "- differs from production:",
        *(
            f"  - {item['setting']}: {item['shipped']} -> {item['here']} ({item['why']})"
            for item in summary["differences_from_production"]
        ),
        "",
        "PASS" if passed(summary) else "FAIL",
    ]
    return "\n".join(lines)


def add_live_command(subcommands: argparse._SubParsersAction) -> None:
    parser = subcommands.add_parser(
        "live",
        help="the orders pool's HPA on real workers, its metric from a real Prometheus, under stepped load",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "--phases",
        type=parse_phases,
        default=parse_phases(DEFAULT_PHASES),
        help=f"SECONDS:ORDERS_PER_SECOND,... placed over HTTP (default {DEFAULT_PHASES})",
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (default 8)")
    parser.add_argument(
        "--target", default=DEFAULT_TARGET, help="averageValue per pod, instead of the HPA's 1800 (default %(default)s)"
    )
    parser.add_argument("--min-replicas", type=int, default=None, help="instead of the HPA's minReplicas")
    parser.add_argument(
        "--max-replicas",
        type=int,
        default=DEFAULT_MAX_REPLICAS,
        help="instead of the HPA's maxReplicas (default %(default)s)",
    )
    parser.add_argument(
        "--scale-down-window",
        type=int,
        default=None,
        metavar="SECONDS",
        help="scaleDown.stabilizationWindowSeconds instead of the HPA's",
    )
    parser.add_argument(
        "--sync-seconds",
        type=int,
        default=SYNC_PERIOD_SECONDS,
        help="the controller's sync period (default %(default)s, as kube-controller-manager)",
    )
    parser.add_argument(
        "--scrape-seconds", type=int, default=None, help="Prometheus' scrape interval (default: the web PodMonitor's)"
    )
    parser.add_argument(
        "--rule-seconds",
        type=int,
        default=None,
        help="the autoscaling rule group's interval (default: the rules file's)",
    )
    parser.add_argument(
        "--payment-latency-ms",
        type=int,
        default=DEFAULT_PAYMENT_LATENCY_MS,
        help="PAYMENT_SANDBOX_LATENCY_MS of the orders pods (default %(default)s; the sandbox's own is 0)",
    )
    parser.add_argument(
        "--tail-seconds", type=float, default=900, help="after the load, the longest wait for minReplicas again (900)"
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=300, help="then, how long to wait for every order to be final (300)"
    )
    parser.add_argument("--database", default=DEFAULT_DATABASE, help="the database to recreate (%(default)s)")
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="writes OUTPUT.csv, .png and .json (default docs/autoscaling/live-run)",
    )
    parser.set_defaults(run=run_live_command)


def run_live_command(arguments: argparse.Namespace) -> int:
    settings = Settings(
        phases=tuple(arguments.phases),
        clients=arguments.clients,
        target=arguments.target,
        min_replicas=arguments.min_replicas,
        max_replicas=arguments.max_replicas,
        scale_down_window=arguments.scale_down_window,
        sync_seconds=arguments.sync_seconds,
        scrape_seconds=arguments.scrape_seconds or shipped_scrape_seconds(),
        rule_seconds=arguments.rule_seconds or shipped_rule_seconds(),
        payment_latency_ms=arguments.payment_latency_ms,
        tail_seconds=arguments.tail_seconds,
        settle_seconds=arguments.settle_seconds,
        database=arguments.database,
        output=arguments.output,
    )
    if not Path(PROMETHEUS).exists():
        print(f"error: {PROMETHEUS} not found (Debian package prometheus, system-packages.txt)", file=sys.stderr)
        return 2
    spec = autoscaler(settings)
    for item in differences(settings, spec):
        print(f"differs from production: {item['setting']} {item['shipped']} -> {item['here']}: {item['why']}")
    with env.work_directory("live") as work_dir:
        summary = live(settings, work_dir=work_dir)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    write_csv(summary, settings.output.with_suffix(".csv"))
    draw_chart(summary, settings.phases, settings.output.with_suffix(".png"))
    settings.output.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary), flush=True)
    return 0 if passed(summary) else 1
