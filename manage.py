#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
    # Commands typed in a developer's shell run in development mode unless told otherwise, so `manage.py check`
    # works in a fresh clone. Deployments set DJANGO_DEBUG=false for every process (docker-compose.yml, the
    # Dockerfile's collectstatic); gunicorn and celery never read this default.
    os.environ.setdefault("DJANGO_DEBUG", "true")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
