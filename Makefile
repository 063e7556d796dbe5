# Everyday verbs. Each one is a line a newcomer can read; the scripts in bin/ say what they do.
.PHONY: run test lint format check stats screenshots bench soak

run:      ## set up (venv, dependencies, database, demo catalog) and run web + worker + beat + Flower
	bin/run

test:     ## run the test suite against the real PostgreSQL, Redis and Celery workers
	bin/test

lint:     ## ruff lint and format check, the import layers, mypy, Django system checks, migrations up to date
	bin/bootstrap requirements-dev.txt
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	DJANGO_DEBUG=true .venv/bin/mypy
	DJANGO_DEBUG=true .venv/bin/python manage.py check
	DJANGO_DEBUG=true .venv/bin/python manage.py makemigrations --check --dry-run

format:   ## apply ruff's fixes and formatting
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

stats:    ## how much work waits: queue lengths, outbox backlog, dead letters, workers online
	.venv/bin/python manage.py queue_stats

screenshots: ## regenerate the README's pictures of Flower and /ops/ from a real run (needs Debian's chromium)
	bin/bootstrap requirements-docs.txt
	.venv/bin/python scripts/screenshots.py

bench:    ## the engines table (Celery, RQ, Huey, Dramatiq), the order pipeline and its profile; see docs/benchmarks.md
	bin/bootstrap requirements-dev.txt
	.venv/bin/python -m bench engines
	.venv/bin/python -m bench orders
	.venv/bin/python -m bench profile
	.venv/bin/python -m bench relay

soak:     ## 2,000 orders through the API while workers are killed and Redis restarts; fails on a lost or doubled order
	bin/bootstrap requirements-dev.txt
	.venv/bin/python -m bench soak
