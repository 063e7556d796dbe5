# One image for every process: web (gunicorn), the workers, beat, Flower and the migrate Job differ only by command.
# It runs as a non-root user on a read-only root file system (deploy/k8s): at run time nothing is written outside
# /tmp and /run/worker, the pods' emptyDir volumes. So everything that would be written later is made here.
# The Python minor the test suite runs on (3.13), by its full tag: a rebuild gets this interpreter, not the newest 3.13.
FROM python:3.13.9-slim-bookworm

# No bytecode written beside the code at run time (compiled below instead), logs unbuffered, no pip cache kept.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements.txt .
# pip compiles the libraries' bytecode as it installs them.
RUN pip install -r requirements.txt

COPY . .
# Our own bytecode, so that imports on the read-only file system do not recompile every module at every start.
RUN python -m compileall -q -j 0 /app
# Static files under hashed, compressed names for WhiteNoise (settings need a SECRET_KEY, not a real one, for this).
RUN DJANGO_DEBUG=false SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input

# The code stays root's (read-only to the service). The user has no home: a process that tries to write one fails
# loudly here, instead of on the read-only root in a pod. The manifests run as this same uid (runAsUser: 10001).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app
USER 10001:10001

EXPOSE 8000 5555 9808
# --no-control-socket: gunicorn would otherwise create $HOME/.gunicorn/ for its control socket.
CMD ["gunicorn", "proj.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--no-control-socket"]
