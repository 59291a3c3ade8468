# One image for both Fly.io apps: its default command is the web process; fly.worker.toml runs
# the worker (`arq jobs.WorkerSettings`) from the same image. tests/deploy/test_deploy.py
# replays these steps in a fresh virtualenv, so every image location is an ENV variable
# (VIRTUAL_ENV, APP_HOME) and the test can move them somewhere writable.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    APP_HOME=/app
# The code runs from APP_HOME rather than being pip-installed: the release command reads the
# schema migrations (service/migrations/*.sql) beside their runner there.
ENV PATH="$VIRTUAL_ENV/bin:$PATH" \
    PYTHONPATH="$APP_HOME"

RUN python -m venv "$VIRTUAL_ENV"

WORKDIR $APP_HOME

# Dependencies first, from pyproject.toml alone, so this layer is rebuilt only when they change
# and not on every code edit. The dev extras (pytest, ruff, local servers) stay out.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install -r requirements.txt \
    && rm requirements.txt

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin shopjobs

# The files stay owned by root: the app user can read the code but not rewrite it.
COPY . .

USER shopjobs
EXPOSE 8080

# Fly's proxy reaches the web on 0.0.0.0:$PORT (8080 unless set; fly.web.toml's internal_port).
CMD ["sh", "-c", "exec uvicorn service.app:app --host 0.0.0.0 --port ${PORT:-8080}"]
