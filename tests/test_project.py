"""The ways the service is started (docker-compose.yml, Procfile) name entry points that exist."""

import importlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from celery.bin.celery import celery as celery_cli
from django.conf import settings
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError

from jobs.routing import queue_names
from orders.models import Product

ROOT = Path(__file__).resolve().parent.parent


def check_entry_point(command: list[str]) -> None:
    """Fail unless `command` starts one of our real entry points."""
    if command[:2] == ["sh", "-c"]:
        for part in command[2].split("&&"):
            check_entry_point(shlex.split(part))
        return
    program, *arguments = command
    if program == "celery":
        assert arguments[:2] == ["-A", "proj"], command
        app = importlib.import_module(arguments[1]).celery_app
        assert app.main == "proj"
        assert arguments[2] in celery_cli.commands, command
    elif program == "gunicorn":
        module, _, attribute = arguments[0].partition(":")
        assert callable(getattr(importlib.import_module(module), attribute or "application")), command
    elif program == "python":
        assert arguments[0] == "manage.py", command
        assert arguments[1] in get_commands(), command
    else:
        pytest.fail(f"Unknown program in {command}")


def test_every_compose_service_parses_and_runs_a_real_entry_point():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "web", "worker", "worker-heavy", "media", "beat", "flower"}
    for name in ("migrate", "web", "worker", "worker-heavy", "beat", "flower"):
        assert services[name]["build"] == "."
        check_entry_point(services[name]["command"])
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert redis_command[redis_command.index("--appendfsync") + 1] == "everysec"
    assert services["redis"]["command"][services["redis"]["command"].index("--maxmemory-policy") + 1] == "noeviction"
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert consumed(services["worker"]["command"]) == set(queue_names()) - {"heavy"}
    # SIGTERM is a soft shutdown, and compose waits longer than it before SIGKILL.
    assert services["worker"]["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert services["worker"]["stop_grace_period"] == "60s"
    assert settings.CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT + 10 <= 60


def test_the_procfile_runs_web_worker_heavy_beat_and_flower():
    lines = (ROOT / "Procfile").read_text().splitlines()
    processes = dict(line.split(": ", 1) for line in lines if line and not line.startswith("#"))

    assert set(processes) == {"web", "worker", "heavy", "beat", "flower"}
    for command in processes.values():
        check_entry_point([word for word in shlex.split(command) if not word.startswith("0.0.0.0:")])


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def consumed(command: list[str]) -> set[str]:
    """The queues a `celery worker` command consumes: those of --queues, or every one but --exclude-queues."""
    if "--queues" in command:
        return set(option(command, "--queues").split(","))
    excluded = set(option(command, "--exclude-queues").split(",")) if "--exclude-queues" in command else set()
    return set(queue_names()) - excluded


def test_only_the_heavy_workers_consume_the_heavy_queue_one_process_each():
    # given the worker commands of `make run` (honcho runs the Procfile) and of docker compose
    lines = (ROOT / "Procfile").read_text().splitlines()
    procfile = {
        name: shlex.split(command)
        for name, command in (line.split(": ", 1) for line in lines if line and not line.startswith("#"))
    }
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    workers = {
        "Procfile worker": procfile["worker"],
        "Procfile heavy": procfile["heavy"],
        "compose worker": services["worker"]["command"],
        "compose worker-heavy": services["worker-heavy"]["command"],
    }

    # then thumbnails never wait behind orders, nor orders behind thumbnails
    queues = {name: consumed(command) for name, command in workers.items()}
    assert queues == {
        "Procfile worker": set(queue_names()) - {"heavy"},
        "Procfile heavy": {"heavy"},
        "compose worker": set(queue_names()) - {"heavy"},
        "compose worker-heavy": {"heavy"},
    }
    assert {"cloud.eu", "cloud.us", "cloud.ap", "public_fallback"} <= queues["Procfile worker"]
    assert set().union(*queues.values()) == set(queue_names())
    assert option(workers["Procfile heavy"], "--concurrency") == "1"
    assert option(workers["compose worker-heavy"], "--concurrency") == "1"
    # Two workers on one machine need two node names, or Celery's control commands confuse them.
    assert option(workers["Procfile heavy"], "--hostname") == "heavy@%h"
    assert "--hostname" not in workers["Procfile worker"]
    # The heavy worker and the processes that store images share the media volume.
    for name in ("migrate", "web", "worker-heavy"):
        assert "media:/app/var/media" in services[name]["volumes"], name
    assert services["worker-heavy"]["environment"]["REMAP_SIGTERM"] == "SIGQUIT"
    assert services["worker-heavy"]["stop_grace_period"] == "60s"


@pytest.mark.django_db
def test_seeding_the_catalog_twice_keeps_stock():
    call_command("seed_catalog")
    Product.objects.filter(sku="MUG-001").update(stock=3)

    call_command("seed_catalog")

    assert Product.objects.count() == 6
    assert Product.objects.get(sku="MUG-001").stock == 3


@pytest.mark.django_db
def test_check_services_names_the_unreachable_one(settings, capsys):
    call_command("check_services")
    assert "PostgreSQL and Redis are reachable." in capsys.readouterr().out

    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    with pytest.raises(CommandError) as raised:
        call_command("check_services")

    assert str(raised.value).startswith("Redis is not reachable:")
    assert "Start it: redis-server" in str(raised.value)


def test_manage_py_runs_in_development_mode_in_a_fresh_clone():
    # No .env, no DJANGO_DEBUG, no SECRET_KEY: a newcomer's `python manage.py check` works.
    environment = {key: value for key, value in os.environ.items() if key not in ("DJANGO_DEBUG", "SECRET_KEY")}
    environment.pop("DJANGO_SETTINGS_MODULE", None)

    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_dockerfile_collects_static_files_with_production_settings():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN DJANGO_DEBUG=false SECRET_KEY=collectstatic-only python manage.py collectstatic" in dockerfile
