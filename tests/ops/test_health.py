"""The web's probes: /healthz answers while the process lives; /readyz checks what requests need."""

import pytest
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from ops import health

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_checking_anything(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_readyz_is_ready_when_database_redis_and_migrations_are(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok", "migrations": "ok"},
    }


def test_readyz_is_503_while_redis_is_unreachable(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert (body["checks"]["database"], body["checks"]["migrations"]) == ("ok", "ok")
    assert "Connection refused" in body["checks"]["redis"]


def test_readyz_is_503_until_every_migration_is_applied(client, monkeypatch):
    monkeypatch.setattr(health, "_migrations_applied", False)
    MigrationRecorder(connection).record_unapplied("analytics", "0001_initial")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["migrations"] == "1 migration(s) not applied: analytics.0001_initial"
