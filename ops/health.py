"""Can this process reach what it depends on? Used by the run script and by the web's readiness probe."""

import psycopg2
import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

# Once every migration is applied it stays applied for the life of the process (code does not change under it),
# so the readiness probe builds the migration graph once, not every few seconds.
_migrations_applied = False


def database_problem() -> str | None:
    """None when the database answers, else what is wrong."""
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable", and says why
        return str(error).strip()
    return None


def redis_problem(url: str | None = None) -> str | None:
    """None when Redis answers PING, else what is wrong."""
    try:
        redis.Redis.from_url(url or settings.CELERY_BROKER_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except redis.RedisError as error:
        return str(error)
    return None


def migrations_problem() -> str | None:
    """None when every migration is applied to the database, else which are not (or why that is unknown)."""
    global _migrations_applied
    if _migrations_applied:
        return None
    try:
        executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as error:  # noqa: BLE001 - any failure means "cannot tell", and says why
        return str(error).strip()
    if plan:
        names = ", ".join(f"{migration.app_label}.{migration.name}" for migration, _backwards in plan)
        return f"{len(plan)} migration(s) not applied: {names}"
    _migrations_applied = True
    return None


def create_database_if_missing() -> bool:
    """Create the configured database when the server is up but the database is not there; True if created."""
    database = settings.DATABASES["default"]
    try:
        _connect_to(database["NAME"]).close()
    except psycopg2.OperationalError as error:
        if "does not exist" not in str(error):
            raise
    else:
        return False
    server = _connect_to("postgres")  # the maintenance database every PostgreSQL server has
    server.autocommit = True
    with server.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database["NAME"]}"')
    server.close()
    return True


def _connect_to(database_name: str) -> "psycopg2.extensions.connection":
    """A connection to `database_name` on the configured server, as the configured user, bounded by a timeout."""
    database = settings.DATABASES["default"]
    return psycopg2.connect(
        dbname=database_name,
        user=database["USER"],
        password=database["PASSWORD"],
        host=database["HOST"],
        port=database["PORT"],
        connect_timeout=3,
    )
