"""The rendered Kubernetes manifests: valid, strictly, and true to what the service needs, for every overlay and pool.

Each overlay is rendered with `kubectl kustomize` (deploy.manifests), as are the components on top of production.
No cluster, no Docker engine, no network.
"""

import ast
import re
import sys
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from celery.utils.imports import symbol_by_name
from django.conf import settings
from django.test import override_settings
from flower.command import is_flower_envvar

from deploy import manifests
from jobs import routing
from jobs.beat import LockedDatabaseScheduler
from tests.deploy import dockerfile

ROOT = manifests.ROOT
RENDERINGS = [rendering.name for rendering in manifests.renderings()]
POOLS = {"worker-orders", "worker-io", "worker-maintenance", "worker-heavy"}
# The media server (nginx, not the shop's image) and the claim it serves: product images and thumbnails.
MEDIA_SERVER = "media"
MEDIA_CLAIM = "media"
# What a Celery worker needs after its soft shutdown ends before it exits (cancel the tasks still running, requeue
# their messages, close connections): measured at under 2 s in tests/deploy/test_k8s_worker_process.py; the margin
# leaves room for a loaded node.
COLD_SHUTDOWN_MARGIN_SECONDS = 10
# docs/benchmarks.md: about 98 MB per worker process (293 MB for a main process and 2 children).
MEASURED_RSS_PER_PROCESS_BYTES = 98 * 10**6
# Room the memory limit keeps for the main process, which does not run tasks and so never grows with them.
MAIN_PROCESS_ALLOWANCE_BYTES = 128 * 2**20
PROBE_COMMANDS = {
    "livenessProbe": ["python", "-m", manifests.PROBE_MODULE, "liveness"],
    "startupProbe": ["python", "-m", manifests.PROBE_MODULE, "liveness"],
    "readinessProbe": ["python", "-m", manifests.PROBE_MODULE, "readiness"],
}
SECRET_LOOKING_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)AUTH(_|$)|(^|_)KEY$")
URL_WITH_PASSWORD = re.compile(r"://[^/\s:@]*:[^@\s]+@")
SHELLS = {"sh", "bash", "/bin/sh", "/bin/bash", "dash"}
MEMORY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def rendering(name: str) -> manifests.Rendering:
    overlay, _, component = name.partition("+")
    return manifests.render_component(component, overlay=overlay) if component else manifests.render_overlay(name)


def shop_containers(name: str) -> list[manifests.Container]:
    """Every container that runs the shop's image (all but the media server's nginx)."""
    return [container for container in manifests.containers(rendering(name)) if container.name != MEDIA_SERVER]


def container_named(name: str, component: str) -> manifests.Container:
    (container,) = [container for container in manifests.containers(rendering(name)) if container.name == component]
    return container


def mount_at(container: manifests.Container, path: str) -> dict:
    """The volumeMount at `path` (KeyError when there is none)."""
    return {mount["mountPath"]: mount for mount in container.spec.get("volumeMounts", [])}[path]


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions with In) picks a pod with `labels`."""
    expressions = selector.get("matchExpressions", [])
    if any(expression["operator"] != "In" for expression in expressions):
        raise ValueError(f"only In expressions are read here: {expressions}")
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items()) and all(
        labels.get(expression["key"]) in expression["values"] for expression in expressions
    )


def picked_by(selector: dict, name: str) -> list[str]:
    """The workloads whose pods `selector` picks."""
    return [
        container.name
        for container in manifests.containers(rendering(name))
        if selects(selector, container.workload["spec"]["template"]["metadata"]["labels"])
    ]


def nginx_directives(text: str) -> list[tuple[str, list[str], list]]:
    """An nginx configuration as (directive, arguments, block) triples, blocks nested (no quoted `;{}#` inside)."""
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};]+', re.sub(r"#[^\n]*", "", text))
    stack: list[list] = [[]]
    words: list[str] = []
    for token in tokens:
        if token == ";":
            stack[-1].append((words[0], words[1:], []))
            words = []
        elif token == "{":
            block: list = []
            stack[-1].append((words[0], words[1:], block))
            stack.append(block)
            words = []
        elif token == "}":
            stack.pop()
        else:
            words.append(token.strip('"'))
    return stack[0]


def nginx_find(directives: list, name: str) -> list[tuple[str, list[str], list]]:
    """Every `name` directive, at any depth."""
    found = []
    for directive in directives:
        if directive[0] == name:
            found.append(directive)
        found += nginx_find(directive[2], name)
    return found


def media_server_config(name: str) -> list:
    """The media server's nginx.conf, from the ConfigMap mounted where its `-c` points."""
    server = container_named(name, MEDIA_SERVER)
    config_path = Path(server.option("-c"))
    volume = server.mounts()[str(config_path.parent)]
    config_map = rendering(name).find("ConfigMap", volume["configMap"]["name"])
    return nginx_directives(config_map["data"][config_path.name])


def pools(name: str) -> dict[str, manifests.Container]:
    return {
        container.name: container
        for container in manifests.containers(rendering(name))
        if manifests.is_worker(container)
    }


def memory_bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([KMG]i?)?", quantity).groups()
    return int(number) * MEMORY_UNITS.get(unit or "", 1)


def names_read_from_environment(source: Path) -> set[str]:
    """The environment variables a settings-like module reads: os.environ.get/[]/getenv and its env_* helpers."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            function = ast.unparse(node.func)
            if function in {"os.environ.get", "os.getenv", "os.environ.setdefault"} or function.startswith("env_"):
                names.add(node.args[0].value)
        elif (
            isinstance(node, ast.Subscript)
            and ast.unparse(node.value) == "os.environ"
            and isinstance(node.slice, ast.Constant)
        ):
            names.add(node.slice.value)
    return names


@cache
def names_celery_reads() -> frozenset[str]:
    """Every environment variable Celery, kombu and billiard read themselves (CELERY_BROKER_URL, REMAP_SIGTERM...)."""
    pattern = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*['"]([A-Z][A-Z0-9_]*)['"]""")
    names = set()
    for package in ("celery", "kombu", "billiard"):
        for path in Path(sys.modules[package].__file__).parent.rglob("*.py"):
            names |= set(pattern.findall(path.read_text(errors="replace")))
    return frozenset(names)


@cache
def names_the_service_reads() -> frozenset[str]:
    settings_source = ROOT / "proj" / "settings.py"
    return frozenset(names_read_from_environment(settings_source) | names_read_from_environment(manifests.PROBE_SOURCE))


def test_every_overlay_and_component_is_rendered():
    expected = [*manifests.overlay_names(), *(f"production+{name}" for name in manifests.component_names())]

    assert expected == RENDERINGS
    assert {"dev", "production", "eu", "production+gpu"} <= set(RENDERINGS)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_object_passes_strict_validation(name):
    problems = [
        problem
        for item in rendering(name).objects
        for version in manifests.KUBERNETES_VERSIONS
        for problem in manifests.validation_errors(item, version=version)
    ]

    assert problems == []


def test_strict_validation_rejects_an_unknown_field_and_a_custom_resource_without_schema():
    deployment = rendering("production").find("Deployment", "worker-orders")
    misspelt = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    unknown = {"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}
    monitor = rendering("production").find("PodMonitor", "web")
    wrong_interval = {
        **monitor,
        "spec": {**monitor["spec"], "podMetricsEndpoints": [{"port": "http", "interval": "30"}]},
    }

    assert manifests.validation_errors(misspelt, version="1.35") == [
        "Deployment/worker-orders (Kubernetes 1.35): spec: Additional properties are not allowed ('replica' was "
        "unexpected)"
    ]
    assert manifests.validation_errors(unknown, version="1.35") == [
        "Gadget/g: Couldn't find schema for kind Gadget with api version example.com/v1 for kubernetes version 1.35; "
        "a custom resource needs deploy/k8s/schemas/gadget.schema.json"
    ]
    assert len(manifests.validation_errors(wrong_interval, version="1.35")) == 1


def test_every_schema_file_is_named_after_the_kind_it_checks():
    for path in manifests.SCHEMAS.glob("*.schema.json"):
        schema = manifests.custom_schema(path.name.removesuffix(".schema.json"))
        assert schema["properties"]["kind"]["const"].lower() == path.name.removesuffix(".schema.json")
        assert schema["additionalProperties"] is False


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_names_of_the_issue(name):
    objects = {(item["kind"], item["metadata"]["name"]) for item in rendering(name).objects}
    deployments = {item["metadata"]["name"] for item in rendering(name).of_kind("Deployment")}

    assert deployments == POOLS | {"web", "beat", "flower", MEDIA_SERVER}
    assert {("Namespace", "shop"), ("ConfigMap", "shop-config"), ("Secret", "shop-secrets")} <= objects
    assert {("PersistentVolumeClaim", MEDIA_CLAIM), ("Service", MEDIA_SERVER), ("ConfigMap", "media-nginx")} <= objects
    assert {item["metadata"].get("namespace") for item in rendering(name).objects if item["kind"] != "Namespace"} == {
        "shop"
    }
    for item in rendering(name).of_kind("Deployment"):
        component = item["metadata"]["name"]
        labels = {"app.kubernetes.io/name": "shop", "app.kubernetes.io/component": component}
        assert item["metadata"]["labels"] == labels
        assert item["spec"]["selector"]["matchLabels"] == labels
        assert item["spec"]["template"]["metadata"]["labels"] == labels


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_pool_stops_gracefully_within_its_grace_period(name):
    for pool, container in pools(name).items():
        environment = manifests.environment(container, rendering(name))
        soft_shutdown = float(
            environment.get("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT)
        )

        assert container.pod["terminationGracePeriodSeconds"] > soft_shutdown + COLD_SHUTDOWN_MARGIN_SECONDS, pool
        assert environment["REMAP_SIGTERM"] == "SIGQUIT", pool


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_pool_runs_celery_in_exec_form_with_explicit_queues_and_concurrency(name):
    for pool, container in pools(name).items():
        assert container.spec["command"] == ["celery", "-A", "proj", "worker"], pool
        # Explicit queues or a region (its one queue), not both: never a worker that consumes whatever is declared.
        region = manifests.environment(container, rendering(name)).get("WORKER_REGION")
        assert bool(container.option("--queues")) != bool(region), pool
        assert int(container.option("--concurrency")) >= 1, pool
        assert container.option("--loglevel") == "INFO", pool
    # A region is a pod's, never every container's.
    assert "WORKER_REGION" not in rendering(name).find("ConfigMap", "shop-config")["data"]


@pytest.mark.parametrize("name", RENDERINGS)
def test_no_container_starts_through_a_shell(name):
    for container in manifests.containers(rendering(name)):
        assert container.spec["command"][0] not in SHELLS, container.name
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = container.spec.get(probe, {}).get("exec", {}).get("command", [""])
            assert command[0] not in SHELLS, (container.name, probe)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_pool_probes_through_the_probe_command_on_its_probe_directory(name):
    for pool, container in pools(name).items():
        probe_directory = manifests.environment(container, rendering(name))["WORKER_PROBE_DIR"]
        mounted = [path for path, volume in container.mounts().items() if "emptyDir" in volume]

        assert {probe: container.spec[probe]["exec"]["command"] for probe in PROBE_COMMANDS} == PROBE_COMMANDS, pool
        assert any(probe_directory.startswith(f"{path}/") for path in mounted), pool
        assert "inspect" not in str(container.spec), pool


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_pool_serves_its_metrics_on_the_port_its_pod_monitor_scrapes(name):
    monitor = rendering(name).find("PodMonitor", "workers")
    selected = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
    scraped_ports = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}

    assert selected == POOLS
    for pool, container in pools(name).items():
        port = int(manifests.environment(container, rendering(name))["WORKER_METRICS_PORT"])
        assert {(entry["name"], entry["containerPort"]) for entry in container.spec["ports"]} == {("metrics", port)}
        assert scraped_ports == {"metrics"}, pool


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_environment_variable_and_config_key_is_a_name_the_service_reads(name):
    service, celery = names_the_service_reads(), names_celery_reads()
    config = rendering(name).find("ConfigMap", "shop-config")["data"]
    secret = rendering(name).find("Secret", "shop-secrets")["stringData"]

    assert set(config) - service - celery == set()
    assert set(secret) - service - celery == set()
    for container in manifests.containers(rendering(name)):
        variables = container.spec.get("env", [])
        # A variable that only feeds a later one's $(NAME) is read by Kubernetes itself.
        referenced = {
            match for variable in variables for match in re.findall(r"\$\(([^)]+)\)", variable.get("value", ""))
        }
        unread = {
            variable["name"]
            for variable in variables
            if variable["name"] not in service | celery | referenced
            and not (container.name == "flower" and is_flower_envvar(variable["name"]))
        }
        assert unread == set(), container.name


def test_the_settings_parser_finds_what_settings_read():
    names = names_the_service_reads()

    assert {"DJANGO_DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= names
    assert {"CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "WORKER_PROBE_DIR", "WORKER_METRICS_PORT"} <= names
    assert "ALLOWED_HOST" not in names
    assert {"CELERY_BROKER_URL", "REMAP_SIGTERM"} <= names_celery_reads()
    assert "CELERY_TASK_ACKS_LATE" not in names_celery_reads() | names  # settings hard-code it: an env var is dead


@pytest.mark.parametrize("name", RENDERINGS)
def test_no_config_map_holds_anything_that_looks_secret(name):
    for config in rendering(name).of_kind("ConfigMap"):
        for key, value in config.get("data", {}).items():
            assert not SECRET_LOOKING_KEY.search(key), key
            assert not URL_WITH_PASSWORD.search(value), key


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_secret_is_a_template_of_placeholders(name):
    secret = rendering(name).find("Secret", "shop-secrets")

    assert "data" not in secret
    assert set(secret["stringData"]) == {
        "SECRET_KEY", "DATABASE_URL", "REDIS_URL", "PAYMENT_SANDBOX_REDIS_URL", "FLOWER_BASIC_AUTH",
        "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD",
    }  # fmt: skip
    assert all(value == "" or "REPLACE_ME" in value for value in secret["stringData"].values())
    assert (secret["stringData"]["SECRET_KEY"], secret["stringData"]["FLOWER_BASIC_AUTH"]) == ("", "")


def consumed(name: str) -> dict[str, set[str]]:
    return {pool: manifests.consumed_queues(container, rendering(name)) for pool, container in pools(name).items()}


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_queue_the_router_sends_to_is_consumed_by_exactly_one_running_pool(name):
    router_queues = manifests.router_queue_names(rendering(name))
    consumers = {queue: [pool for pool, queues in consumed(name).items() if queue in queues] for queue in router_queues}

    assert {queue: len(pool) for queue, pool in consumers.items()} == dict.fromkeys(router_queues, 1)
    for queue, (pool,) in consumers.items():
        assert pools(name)[pool].workload["spec"].get("replicas", 1) >= 1, queue


@pytest.mark.parametrize("name", RENDERINGS)
def test_a_pool_for_a_queue_the_router_does_not_declare_yet_runs_no_pod(name):
    # A worker asked for an undeclared queue exits at start (CELERY_TASK_CREATE_MISSING_QUEUES is off).
    for pool, queues in consumed(name).items():
        undeclared = queues - set(manifests.declared_queue_names(rendering(name)))
        if undeclared:
            assert pools(name)[pool].workload["spec"].get("replicas", 1) == 0, (pool, undeclared)


def test_the_router_of_a_rendering_is_the_service_s_router_with_the_site_s_regions():
    # The router's own queue names, from the settings the tests run with (the shipped defaults) ...
    assert manifests.declared_queue_names(rendering("production")) == routing.queue_names()
    # ... and an EU site's: its one strict region, so nothing can be sent to the public pool.
    assert manifests.router_queue_names(rendering("eu")) == ("cloud.eu", *routing.CENTRAL_QUEUES)


@pytest.mark.parametrize("key", ["ORDER_REGIONS", "STRICT_RESIDENCY_REGIONS"])
def test_the_base_states_the_routing_settings_as_the_service_defaults_them(key):
    # The pools' queues are derived from these; a default changed in proj/settings.py must change them too.
    assert manifests.configured_list(rendering("production"), key) == getattr(settings, key)
    assert int(rendering("production").find("ConfigMap", "shop-config")["data"]["PUBLIC_FALLBACK_BACKLOG"]) == (
        settings.PUBLIC_FALLBACK_BACKLOG
    )


def test_the_eu_site_processes_eu_orders_on_eu_pods_alone():
    orders = pools("eu")["worker-orders"]
    environment = manifests.environment(orders, rendering("eu"))

    assert orders.option("--queues") is None
    assert environment["WORKER_REGION"] == "eu"
    assert consumed("eu")["worker-orders"] == {"cloud.eu"}
    assert manifests.configured_list(rendering("eu"), "ORDER_REGIONS") == ["eu"]
    assert "eu" in manifests.configured_list(rendering("eu"), "STRICT_RESIDENCY_REGIONS")
    # The same command as every other site's, told its region: what ops/worker.py accepts (one of the two).
    with override_settings(ORDER_REGIONS=["eu"]):
        assert routing.queues_of_worker_region(environment["WORKER_REGION"]) == ["cloud.eu"]


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_container_has_requests_and_limits(name):
    for container in manifests.containers(rendering(name)):
        resources = container.spec["resources"]
        assert set(resources["requests"]) >= {"cpu", "memory"}, container.name
        assert set(resources["limits"]) >= {"cpu", "memory"}, container.name
        assert memory_bytes(resources["requests"]["memory"]) <= memory_bytes(resources["limits"]["memory"])


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_pool_is_sized_from_the_measured_memory_of_its_processes(name):
    for pool, container in pools(name).items():
        concurrency = int(container.option("--concurrency"))
        per_child_limit = int(container.option("--max-memory-per-child")) * 2**10
        memory = container.spec["resources"]

        assert memory_bytes(memory["requests"]["memory"]) >= MEASURED_RSS_PER_PROCESS_BYTES * (1 + concurrency), pool
        # A child past --max-memory-per-child is replaced after its task, before the pod reaches its limit.
        assert memory_bytes(memory["limits"]["memory"]) >= MAIN_PROCESS_ALLOWANCE_BYTES + concurrency * per_child_limit
        assert per_child_limit > MEASURED_RSS_PER_PROCESS_BYTES, pool


@pytest.mark.parametrize("name", RENDERINGS)
def test_beat_is_singular_and_schedules_under_the_lock(name):
    beats = [container for container in manifests.containers(rendering(name)) if "beat" in container.command]
    (beat,) = beats
    scheduler = beat.option("--scheduler") or settings.CELERY_BEAT_SCHEDULER
    scaled = {
        item["spec"]["scaleTargetRef"]["name"]
        for item in rendering(name).objects
        if item["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}
    }

    assert (beat.name, beat.workload["spec"].get("replicas", 1)) == ("beat", 1)
    assert beat.spec["command"] == ["celery", "-A", "proj", "beat"]
    assert issubclass(symbol_by_name(scheduler), LockedDatabaseScheduler)
    assert "beat" not in scaled
    for container in manifests.containers(rendering(name)):
        assert not {"-B", "--beat"} & set(container.command), container.name  # no worker embeds a beat


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_pod_runs_restricted_as_a_non_root_user_on_a_read_only_root(name):
    for container in manifests.containers(rendering(name)):
        pod, security = container.pod, container.spec["securityContext"]

        assert pod["securityContext"]["runAsNonRoot"] is True, container.name
        assert pod["securityContext"]["runAsUser"] != 0, container.name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, container.name
        assert pod["automountServiceAccountToken"] is False, container.name
        assert security == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }, container.name
        # Whatever a process writes goes to a volume the pod mounts writable: its emptyDirs, or the media claim.
        assert "/tmp" in container.mounts(), container.name  # noqa: S108 - the pod's own emptyDir
        for path, volume in container.mounts().items():
            if "configMap" in volume:
                assert mount_at(container, path)["readOnly"] is True, (container.name, path)
            else:
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                assert "emptyDir" in volume or claim == MEDIA_CLAIM, (container.name, path)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_path_a_container_is_told_to_write_to_is_on_a_mounted_volume(name):
    for container in manifests.containers(rendering(name)):
        environment = manifests.environment(container, rendering(name), fields={"status.podIP": "10.0.0.7"})
        paths = [value for key, value in environment.items() if key.endswith("_DIR") and value.startswith("/")]
        for path in paths:
            assert any(path.startswith(f"{mount}/") for mount in container.mounts()), (container.name, path)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_image_is_the_one_image_by_a_pinned_tag(name):
    images = {container.spec["image"] for container in shop_containers(name)}
    (image,) = images
    repository, _, tag = image.rpartition(":")

    assert repository
    assert tag not in {"", "latest"}
    if name != "dev":  # a development cluster runs what was just built
        assert re.fullmatch(r"\d+\.\d+\.\d+", tag)
    # The media server is NGINX's unprivileged image, by its full tag in every rendering (nothing of ours is built).
    assert re.fullmatch(
        r"nginxinc/nginx-unprivileged:\d+\.\d+\.\d+-alpine", container_named(name, MEDIA_SERVER).spec["image"]
    )


@pytest.mark.parametrize("name", RENDERINGS)
def test_web_probes_carry_a_host_that_allowed_hosts_names_and_prometheus_is_allowed_too(name):
    (web,) = [container for container in manifests.containers(rendering(name)) if container.name == "web"]
    allowed = manifests.environment(web, rendering(name), fields={"status.podIP": "10.0.0.7"})["ALLOWED_HOSTS"]

    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        headers = {header["name"]: header["value"] for header in web.spec[probe]["httpGet"]["httpHeaders"]}
        assert headers["Host"] in allowed.split(","), probe
    assert {web.spec["livenessProbe"]["httpGet"]["path"], web.spec["readinessProbe"]["httpGet"]["path"]} == {
        "/healthz",
        "/readyz",
    }
    assert "10.0.0.7" in allowed.split(",")  # the pod IP Prometheus sends as Host
    assert web.spec["lifecycle"]["preStop"]["sleep"]["seconds"] > 0


@pytest.mark.parametrize("name", RENDERINGS)
def test_migrations_run_once_per_release_in_a_job(name):
    (job,) = rendering(name).of_kind("Job")
    commands = [container.command for container in manifests.containers(rendering(name))]

    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "manage.py",
        "migrate",
        "--no-input",
    ]
    assert sum("migrate" in command for command in commands) == 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_heavy_pool_alone_runs_on_its_own_nodes(name):
    for pool, container in pools(name).items():
        tolerations = container.pod.get("tolerations", [])
        if pool == "worker-heavy":
            assert container.pod["nodeSelector"], pool
            assert tolerations, pool
        else:
            assert tolerations == [], pool


def test_the_gpu_component_puts_the_heavy_pool_on_gpu_nodes():
    heavy = pools("production+gpu")["worker-heavy"]
    others = {pool: container.pod for pool, container in pools("production+gpu").items() if pool != "worker-heavy"}

    assert heavy.spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert heavy.pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert heavy.pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert others == {pool: container.pod for pool, container in pools("production").items() if pool != "worker-heavy"}


@pytest.mark.parametrize("name", ["production", "eu"])
def test_production_keeps_web_up_through_a_node_loss_and_a_drain(name):
    web = rendering(name).find("Deployment", "web")
    budgets = {item["metadata"]["name"]: item["spec"] for item in rendering(name).of_kind("PodDisruptionBudget")}
    anti_affinity = web["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]

    assert web["spec"]["replicas"] >= 2
    assert anti_affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    assert budgets["web"]["minAvailable"] == 1
    assert {budget["selector"]["matchLabels"]["app.kubernetes.io/component"] for budget in budgets.values()} == {
        "web",
        "worker-orders",
        "worker-io",
        MEDIA_SERVER,
    }
    for pool in POOLS:
        spread = rendering(name).find("Deployment", pool)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        assert spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["matchLabelKeys"] == [
            "app.kubernetes.io/component"
        ]


def test_dev_runs_one_of_everything():
    replicas = {item["metadata"]["name"]: item["spec"]["replicas"] for item in rendering("dev").of_kind("Deployment")}

    assert replicas == dict.fromkeys(POOLS | {"web", "beat", "flower", MEDIA_SERVER}, 1)
    assert rendering("dev").of_kind("PodDisruptionBudget") == []


def test_the_eu_overlay_keeps_every_pod_in_the_eu():
    for container in manifests.containers(rendering("eu")):
        assert container.pod["nodeSelector"]["topology.kubernetes.io/region"] == "eu-central-1", container.name


@pytest.mark.parametrize("name", RENDERINGS)
def test_only_web_and_media_are_reachable_from_outside_and_metrics_and_flower_from_monitoring_only(name):
    policies = {item["metadata"]["name"]: item["spec"] for item in rendering(name).of_kind("NetworkPolicy")}

    def sources(policy: str) -> set[str]:
        return {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for rule in policies[policy]["ingress"]
            for peer in rule["from"]
        }

    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert sources("web") == {"ingress-nginx", "monitoring"}
    assert sources("media") == {"ingress-nginx"}
    assert sources("worker-metrics") == {"monitoring"}
    assert sources("flower") == {"monitoring"}
    assert set(policies["worker-metrics"]["podSelector"]["matchExpressions"][0]["values"]) == POOLS


def test_the_image_runs_as_the_user_the_pods_run_as_from_a_pinned_base():
    # The image is the Dockerfile's last stage; the stages before it only build parts of it (test_dockerfile.py).
    base = dockerfile.image().image
    (user,) = dockerfile.image().arguments("USER")
    pod_users = {
        (container.pod["securityContext"]["runAsUser"], container.pod["securityContext"]["runAsGroup"])
        for name in RENDERINGS
        for container in shop_containers(name)
    }

    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base)
    assert {tuple(int(part) for part in user.split(":"))} == pod_users == {(10001, 10001)}


@pytest.mark.parametrize("name", RENDERINGS)
def test_web_and_the_heavy_pool_mount_the_one_media_claim_at_media_root(name):
    media_root = str(dockerfile.path_in_image("MEDIA_ROOT"))
    claimed = {
        container.name: volume["persistentVolumeClaim"]
        for container in manifests.containers(rendering(name))
        for volume in container.mounts().values()
        if "persistentVolumeClaim" in volume
    }

    # The admin stores images there, the heavy pool reads them and writes thumbnails beside them; migrate runs
    # no seed_catalog here, so it has no need of it; the media server reads it.
    assert claimed == {
        "web": {"claimName": MEDIA_CLAIM},
        "worker-heavy": {"claimName": MEDIA_CLAIM},
        MEDIA_SERVER: {"claimName": MEDIA_CLAIM, "readOnly": True},
    }
    rendering(name).find("PersistentVolumeClaim", MEDIA_CLAIM)
    for component in ("web", "worker-heavy"):
        container = container_named(name, component)
        environment = manifests.environment(container, rendering(name), fields={"status.podIP": "10.0.0.7"})
        # At the settings' default MEDIA_ROOT in the image (the environment does not move it elsewhere), writable ...
        assert container.mounts()[media_root] == {
            "name": mount_at(container, media_root)["name"],
            "persistentVolumeClaim": {"claimName": MEDIA_CLAIM},
        }
        assert "MEDIA_ROOT" not in environment, component
        assert mount_at(container, media_root).get("readOnly", False) is False, component
        # ... by the service's uid: the kubelet gives a new volume's root the pods' group.
        security = container.pod["securityContext"]
        assert (security["fsGroup"], security["fsGroupChangePolicy"]) == (security["runAsGroup"], "OnRootMismatch")


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_media_claim_is_read_write_many_except_on_a_one_node_dev_cluster(name):
    claim = rendering(name).find("PersistentVolumeClaim", MEDIA_CLAIM)

    # Web and heavy pods run on different nodes (the heavy pool on nodes of its own): a ReadWriteOnce volume would
    # be attached to one node only, and the pods on the others would never start.
    expected = ["ReadWriteOnce"] if name == "dev" else ["ReadWriteMany"]
    assert claim["spec"]["accessModes"] == expected
    assert memory_bytes(claim["spec"]["resources"]["requests"]["storage"]) >= 2**30


@pytest.mark.parametrize("name", RENDERINGS)
def test_the_media_server_serves_media_url_s_path_read_only_from_the_claim(name):
    server = container_named(name, MEDIA_SERVER)
    media_url = rendering(name).find("ConfigMap", "shop-config")["data"]["MEDIA_URL"]
    path = urlsplit(media_url).path
    (claim_path,) = [mount for mount, volume in server.mounts().items() if "persistentVolumeClaim" in volume]
    config = media_server_config(name)
    (location,) = [block for _name, arguments, block in nginx_find(config, "location") if arguments == [path]]
    directives = {directive: arguments for directive, arguments, _block in location}
    (listen,) = nginx_find(config, "listen")
    written = [
        arguments[0]
        for directive in (
            "pid",
            *(f"{kind}_temp_path" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        )
        for _name, arguments, _block in nginx_find(config, directive)
    ]
    writable = [mount for mount, volume in server.mounts().items() if "emptyDir" in volume]

    assert path == "/media/"
    assert mount_at(server, claim_path)["readOnly"] is True
    # A request for MEDIA_URL's path + name is that name's file on the claim, and nothing but files.
    assert directives["root"][0].rstrip("/") + path == f"{claim_path}/"
    assert (directives["autoindex"], directives["try_files"]) == (["off"], ["$uri", "=404"])
    assert [block for _name, arguments, block in nginx_find(config, "location") if arguments == ["/"]] == [
        [("return", ["404"], [])]
    ]
    assert nginx_find(config, "alias") == []
    assert nginx_find(config, "autoindex") == [("autoindex", ["off"], [])]
    # It listens on the port its Service and probes use, and writes only to its emptyDir (a read-only root).
    assert {(port["name"], port["containerPort"]) for port in server.spec["ports"]} == {("http", int(listen[1][0]))}
    assert len(written) == 6
    assert all(any(file.startswith(f"{mount}/") for mount in writable) for file in written), written
    assert {probe: server.spec[probe]["httpGet"]["port"] for probe in ("livenessProbe", "readinessProbe")} == {
        "livenessProbe": "http",
        "readinessProbe": "http",
    }
    # As the uid and gid that write the files (web's), so it reads whatever their modes.
    web_security = container_named(name, "web").pod["securityContext"]
    assert (server.pod["securityContext"]["runAsUser"], server.pod["securityContext"]["runAsGroup"]) == (
        web_security["runAsUser"],
        web_security["runAsGroup"],
    )


@pytest.mark.parametrize("name", RENDERINGS)
def test_only_the_ingress_controller_reaches_the_media_server_through_its_service(name):
    server = container_named(name, MEDIA_SERVER)
    labels = server.workload["spec"]["template"]["metadata"]["labels"]
    service = rendering(name).find("Service", MEDIA_SERVER)
    admitting = {
        item["metadata"]["name"]: item["spec"]
        for item in rendering(name).of_kind("NetworkPolicy")
        if selects(item["spec"]["podSelector"], labels) and item["spec"].get("ingress")
    }

    assert set(admitting) == {"media"}
    assert admitting["media"]["ingress"] == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "ports": [{"port": "http"}],
        }
    ]
    # The Service the Ingress routes to: the media pods' port, and no other pod.
    assert picked_by({"matchLabels": service["spec"]["selector"]}, name) == [MEDIA_SERVER]
    assert [(port["port"], port["targetPort"]) for port in service["spec"]["ports"]] == [(80, "http")]
    assert service["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("name", ["production", "eu"])
def test_production_keeps_the_media_server_up_through_a_node_loss_and_a_drain(name):
    media = rendering(name).find("Deployment", MEDIA_SERVER)
    budget = rendering(name).find("PodDisruptionBudget", MEDIA_SERVER)
    anti_affinity = media["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti_affinity["requiredDuringSchedulingIgnoredDuringExecution"]

    assert media["spec"]["replicas"] == 2
    assert term == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": MEDIA_SERVER}},
    }
    assert budget["spec"]["minAvailable"] == 1
    # The budget counts the media pods, and only them.
    assert picked_by(budget["spec"]["selector"], name) == [MEDIA_SERVER]
