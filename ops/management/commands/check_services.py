import psycopg2
from django.core.management.base import BaseCommand, CommandError

from ops import health

HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start "
    "(or `docker compose up -d postgres`), or point DATABASE_URL at a running server",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no '
    "(or `docker compose up -d redis`), or point REDIS_URL at a running server",
}


class Command(BaseCommand):
    help = "Check that PostgreSQL and Redis are reachable; say how to start whichever is not."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--create-database",
            action="store_true",
            help="Create the configured database if the server runs but the database is missing.",
        )

    def handle(self, *args, create_database: bool, **options) -> None:
        problems = {}
        if create_database:
            try:
                if health.create_database_if_missing():
                    self.stdout.write("Created the database.")
            except psycopg2.OperationalError as error:
                problems["PostgreSQL"] = str(error).strip()
        if "PostgreSQL" not in problems and (problem := health.database_problem()):
            problems["PostgreSQL"] = problem
        if problem := health.redis_problem():
            problems["Redis"] = problem
        if problems:
            lines = [
                f"{service} is not reachable: {problem}\n  Start it: {HOW_TO_START[service]}"
                for service, problem in problems.items()
            ]
            raise CommandError("\n".join(lines))
        self.stdout.write(self.style.SUCCESS("PostgreSQL and Redis are reachable."))
