# One image for every process: web (gunicorn), worker, beat and Flower differ only by command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files under hashed, compressed names for WhiteNoise (settings need a SECRET_KEY, not a real one, for this).
RUN DJANGO_DEBUG=false SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input
RUN useradd --create-home --uid 1000 app
USER app

EXPOSE 8000
CMD ["gunicorn", "proj.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
