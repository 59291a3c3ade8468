"""Deploying to Fly.io: fly.web.toml, fly.worker.toml and the Dockerfile, checked against the app.

No image can be built here, so the Dockerfile is replayed: its ENV, WORKDIR, COPY (honouring
.dockerignore) and RUN steps run for real in a fresh virtualenv under a temporary root, with
every absolute path the Dockerfile declares moved under that root. Then the web starts with the
image's CMD, the worker with fly.worker.toml's command, and the release command runs against a
fresh database, all from that virtualenv, with the settings the TOML files set.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from databases import Database
from pydantic import AliasChoices

from jobs.worker.process import CLOSE_SECONDS
from service.app import HEALTH_TIMEOUT_SECONDS
from service.core.db import create_database
from service.core.settings import Settings
from tests.support import effects
from tests.support.config import ROOT
from tests.support.net import free_port, wait_for_http

WEB = tomllib.loads((ROOT / "fly.web.toml").read_text())
WORKER = tomllib.loads((ROOT / "fly.worker.toml").read_text())
# Set with `fly secrets set` (or `fly postgres attach`) on both apps; never in a TOML file.
SECRETS = (
    "DATABASE_URL",
    "REDIS_URL",
    "SHOPIFY_API_KEY",
    "SHOPIFY_API_SECRET",
    "TOKEN_ENCRYPTION_KEYS",
)
# Secrets an app may have: the job dashboard's password (the dashboard is off without it).
OPTIONAL_SECRETS = ("DASHBOARD_PASSWORD",)
# Read by uvicorn or the image's CMD rather than by Settings.
RUNTIME_VARIABLES = {"PORT", "FORWARDED_ALLOW_IPS"}
FLY_MAX_KILL_TIMEOUT = 300
USER_SETUP_COMMANDS = {"useradd", "adduser", "groupadd", "addgroup"}


# --- reading the configuration -------------------------------------------------------------


def seconds(value: int | float | str) -> float:
    """A Fly duration: a bare number is seconds for kill_timeout; strings carry a unit."""
    if isinstance(value, int | float):
        return float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", value.strip())
    assert match, f"not a duration: {value!r}"
    number, unit = float(match[1]), match[2]
    return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number


def setting_names() -> set[str]:
    """Every environment variable Settings reads, aliases included."""
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        else:
            names.add(name.upper())
    return names


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a Machine would see them: the [env] table plus placeholder secrets."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    secrets = {
        "DATABASE_URL": "postgres://app:pw@shopjobs-db.flycast:5432/shopjobs?sslmode=disable",
        "REDIS_URL": "redis://default:pw@fly-shopjobs-redis.upstash.io:6379",
        "SHOPIFY_API_KEY": "key",
        "SHOPIFY_API_SECRET": "secret",
        "TOKEN_ENCRYPTION_KEYS": "SbWnXPTgVyC2NRlqsFNcGhqXKYm9dNn4ZWsZ-E2OTKA=",
    }
    for name, value in {**secrets, **env}.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- replaying the Dockerfile --------------------------------------------------------------


@dataclass
class Step:
    keyword: str
    args: str


@dataclass
class Image:
    """What the replay produced: the image's environment, layout and commands."""

    root: Path
    base: str = ""
    env: dict[str, str] = field(default_factory=dict, repr=False)  # inherits os.environ
    workdir: Path = Path("/")
    user: str = "root"
    users_created: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list, repr=False)

    def inside(self, path: str) -> Path:
        """An image path, moved under the replay's root (paths already there stay)."""
        candidate = Path(path)
        if candidate.is_relative_to(self.root):
            return candidate
        if candidate.is_absolute():
            return self.root / candidate.relative_to("/")
        return self.workdir / candidate


def dockerfile_steps(text: str) -> list[Step]:
    """Instructions with line continuations joined and comments dropped, as Docker reads them."""
    steps, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") or (not pending and not line.strip()):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1]
            continue
        keyword, _, args = (pending + line).strip().partition(" ")
        steps.append(Step(keyword.upper(), args.strip()))
        pending = ""
    return steps


def expand(text: str, env: dict[str, str]) -> str:
    """Docker's variable substitution: $VAR, ${VAR} and ${VAR:-default}."""

    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["bare"]
        found = env.get(name, "")
        return found if found or match["default"] is None else match["default"]

    pattern = r"\$(?:\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|(?P<bare>\w+))"
    return re.sub(pattern, value, text)


def dockerignore(path: Path) -> list[re.Pattern[str]]:
    """.dockerignore patterns as regexes; a matched directory excludes everything under it."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert not line.startswith("!"), "the replay does not handle negated patterns"
        regex, i, line = "", 0, line.strip("/")
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append(re.compile(regex + "(?:/.*)?"))
    return patterns


def copy_context(source: Path, dest: Path, ignore: list[re.Pattern[str]]) -> None:
    def ignored(path: Path) -> bool:
        relative = path.relative_to(ROOT).as_posix()
        return any(pattern.fullmatch(relative) for pattern in ignore)

    if ignored(source):
        return
    if source.is_file():
        target = dest / source.name if dest.is_dir() else dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        return
    for directory, subdirs, files in os.walk(source):
        here = Path(directory)
        subdirs[:] = [name for name in subdirs if not ignored(here / name)]
        for name in files:
            if not ignored(here / name):
                target = dest / (here / name).relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(here / name, target)


def replay(root: Path, log: Path) -> Image:
    """Run the Dockerfile's steps on this machine, under `root`, with this interpreter."""
    image = Image(root=root)
    # The base image's `python`: this interpreter, at the base image's path.
    base_bin = image.inside("/usr/local/bin")
    base_bin.mkdir(parents=True)
    for name in ("python", "python3"):
        (base_bin / name).symlink_to(sys._base_executable)  # type: ignore[attr-defined]
    inherited = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    image.env = {**inherited, "PATH": f"{base_bin}:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"}
    ignore = dockerignore(ROOT / ".dockerignore")

    image.steps = dockerfile_steps((ROOT / "Dockerfile").read_text())
    for step in image.steps:
        if step.keyword == "FROM":
            image.base = step.args
        elif step.keyword == "ENV":
            before = dict(image.env)  # one ENV line sees the values from before it, as in Docker
            for pair in shlex.split(step.args):
                name, sep, raw = pair.partition("=")
                assert sep, f"ENV {pair!r}: use the NAME=value form"
                value = expand(raw, before)
                is_path = value.startswith("/") and ":" not in value
                image.env[name] = str(image.inside(value)) if is_path else value
        elif step.keyword == "WORKDIR":
            image.workdir = image.inside(expand(step.args, image.env))
            image.workdir.mkdir(parents=True, exist_ok=True)
        elif step.keyword == "COPY":
            words = [w for w in shlex.split(expand(step.args, image.env)) if not w.startswith("--")]
            *sources, dest = words
            target = image.inside(dest)
            for source in sources:
                copy_context((ROOT / source).resolve(), target, ignore)
        elif step.keyword == "RUN":
            command = step.args
            if command.split()[0] in USER_SETUP_COMMANDS:
                image.users_created.append(command.split()[-1])  # this machine's users stay
                continue
            with open(log, "ab") as out:
                done = subprocess.run(
                    ["/bin/sh", "-c", command],
                    env=image.env,
                    cwd=image.workdir,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=300,
                )
            if done.returncode != 0:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"RUN {command!r} failed:\n{tail}")
        elif step.keyword == "USER":
            image.user = expand(step.args, image.env)
        elif step.keyword == "CMD":
            text = step.args
            image.cmd = json.loads(text) if text.startswith("[") else ["/bin/sh", "-c", text]
        elif step.keyword != "EXPOSE":
            raise AssertionError(f"the replay does not know {step.keyword}; teach it")
    return image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    root = tmp_path_factory.mktemp("image")
    return replay(root, root.parent / f"{root.name}-build.log")


def image_env(image: Image, app: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    """A Machine's environment: the image's, then the app's [env], then its secrets."""
    return {**image.env, **app.get("env", {}), **{name: env[name] for name in SECRETS}}


def dockerfile_cmd() -> list[str]:
    (step,) = [s for s in dockerfile_steps((ROOT / "Dockerfile").read_text()) if s.keyword == "CMD"]
    return json.loads(step.args) if step.args.startswith("[") else ["sh", "-c", step.args]


def cmd_words(cmd: list[str]) -> list[str]:
    """The CMD's words, looking inside `sh -c "..."`."""
    return shlex.split(cmd[2]) if cmd[:2] in (["sh", "-c"], ["/bin/sh", "-c"]) else cmd


def cmd_port(cmd: list[str]) -> tuple[str, int]:
    """The host the CMD binds and the port it listens on when $PORT is unset."""
    words = cmd_words(cmd)
    host = words[words.index("--host") + 1]
    port = words[words.index("--port") + 1]
    default = re.fullmatch(r"\$\{PORT:-(\d+)\}", port)
    return host, int(default[1]) if default else int(port)


# --- the image -----------------------------------------------------------------------------


def test_image_installs_dependencies_before_code_and_runs_unprivileged(image: Image) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = re.fullmatch(r"python:(\d+)\.(\d+)-slim(?:-\w+)?", image.base)
    assert base, f"expected a slim Python base image, got {image.base!r}"
    minimum = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"])
    assert minimum and (int(base[1]), int(base[2])) >= (int(minimum[1]), int(minimum[2]))

    keywords = [(s.keyword, s.args) for s in image.steps]
    install = next(i for i, (k, a) in enumerate(keywords) if k == "RUN" and "pip install" in a)
    copy_all = next(i for i, (k, a) in enumerate(keywords) if k == "COPY" and a.split()[0] == ".")
    copies_before = [a for k, a in keywords[:install] if k == "COPY"]
    assert install < copy_all, "dependencies must be installed before the code is copied"
    assert copies_before == ["pyproject.toml ./"], "the dependency layer depends on pyproject only"

    assert image.user not in {"root", "0"} and image.user in image.users_created
    last_user = max(i for i, (k, _) in enumerate(keywords) if k == "USER")
    assert all(k != "RUN" for k, _ in keywords[last_user:]), "nothing may run as root after USER"

    app = image.workdir
    for needed in (
        "service/app.py",
        "jobs/worker/process.py",
        "service/migrations/0001_baseline.sql",
    ):
        assert (app / needed).is_file(), f"{needed} is missing from the image"
    for left_out in (".venv", ".git", ".dev", "tests"):
        assert not (app / left_out).exists(), f"{left_out} must not be copied into the image"
    assert not list(app.rglob("__pycache__"))

    venv = Path(image.env["VIRTUAL_ENV"])
    assert venv.is_relative_to(image.root)
    for program in ("uvicorn", "arq", "python"):
        assert shutil.which(program, path=image.env["PATH"]) == str(venv / "bin" / program)


def test_web_from_the_image_serves_its_health_checks(
    image: Image, env: dict[str, str], spawn
) -> None:
    port = free_port()
    metrics_port = free_port()  # the TOML's port may be taken by another suite on this machine
    web = spawn(
        image.cmd,
        {**image_env(image, WEB, env), "PORT": str(port), "WEB_METRICS_PORT": str(metrics_port)},
        "web",
        image.workdir,
    )
    for check in WEB["http_service"]["checks"]:
        method = check.get("method", "GET").upper()
        url = f"http://127.0.0.1:{port}{check['path']}"
        wait_for_http(url, timeout=30)
        response = httpx.request(method, url, timeout=seconds(check["timeout"]))
        assert response.status_code == 200 and response.json() == {"status": "ok"}
    # Prometheus scrapes its own port; the public one answers 404 like any unknown path.
    scrape = httpx.get(f"http://127.0.0.1:{metrics_port}{WEB['metrics']['path']}", timeout=5)
    assert scrape.status_code == 200 and "shopjobs_http_requests_total" in scrape.text
    public = httpx.get(f"http://127.0.0.1:{port}{WEB['metrics']['path']}", timeout=5)
    assert public.status_code == 404 and public.json() == {"error": "Not Found"}

    web.signal(signal.SIGTERM)
    # uvicorn shuts down cleanly, then re-raises the signal so its exit status reports it.
    assert web.wait(timeout=seconds(WEB["kill_timeout"])) in {0, -signal.SIGTERM}, web.output
    assert "Application shutdown complete" in web.output


def test_worker_from_the_image_serves_its_health_check(
    image: Image, env: dict[str, str], spawn
) -> None:
    health = free_port()  # the TOML's port may be taken by another suite on this machine
    worker = spawn(
        shlex.split(WORKER["processes"]["worker"]),
        {**image_env(image, WORKER, env), "WORKER_HEALTH_PORT": str(health)},
        "worker",
        image.workdir,
    )
    for check in WORKER["checks"].values():
        url = f"http://127.0.0.1:{health}{check['path']}"
        wait_for_http(url, timeout=30)
        response = httpx.request(check["method"], url, timeout=seconds(check["timeout"]))
        assert response.status_code == 200 and response.json() == {"status": "ok"}

    worker.signal(signal.SIGTERM)  # Fly's kill_signal; it waits kill_timeout before SIGKILL
    assert worker.wait(timeout=seconds(WORKER["kill_timeout"])) == 0, worker.output


@pytest.fixture
async def fresh_database(database: Database) -> AsyncIterator[str]:
    """An empty database on the test server, named like `fly postgres attach` names them."""
    name = f"release_{uuid.uuid4().hex[:8]}"
    await database.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(str(database.url))
    # The shape of the URL `fly postgres attach` sets: postgres:// and ?sslmode=disable.
    yield urlunsplit(("postgres", parts.netloc, f"/{name}", "sslmode=disable", ""))
    await database.execute(f"DROP DATABASE {name}")


async def test_release_command_applies_the_schema_twice(
    image: Image, env: dict[str, str], database: Database, fresh_database: str
) -> None:
    for app in (WEB, WORKER):
        for _ in range(2):
            done = subprocess.run(
                shlex.split(app["deploy"]["release_command"]),
                env={**image_env(image, app, env), "DATABASE_URL": fresh_database},
                cwd=image.workdir,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stdout + done.stderr

    query = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    released = create_database(fresh_database.replace("postgres://", "postgresql://", 1))
    await released.connect()
    try:
        tables = [row[0] for row in await released.fetch_all(query)]
    finally:
        await released.disconnect()
    # The test database also holds the fault suite's own table (tests/support/effects.py).
    expected = [row[0] for row in await database.fetch_all(query) if row[0] != effects.TABLE_NAME]
    assert tables and tables == expected


# --- the configuration against the app -----------------------------------------------------


def test_web_config_matches_the_image_and_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    service = WEB["http_service"]
    host, default_port = cmd_port(dockerfile_cmd())
    assert host in {"0.0.0.0", "::"}, "Fly's proxy cannot reach a server bound to loopback"
    assert service["internal_port"] == int(WEB["env"].get("PORT", default_port))
    assert service["force_https"] is True
    if service.get("auto_stop_machines", "off") not in {"off", False}:
        assert service["min_machines_running"] >= 1, "webhooks cannot wait for a cold start"

    # Metrics on their own port (WEB_METRICS_PORT, default unless [env] sets it), never the
    # public one: Fly's proxy routes internal_port to the internet.
    metrics_port = int(
        WEB["env"].get("WEB_METRICS_PORT", Settings.model_fields["web_metrics_port"].default)
    )
    assert (WEB["metrics"]["port"], WEB["metrics"]["path"]) == (metrics_port, "/metrics")
    assert metrics_port != service["internal_port"]
    checks = service["checks"]
    assert checks and all(c["path"] == "/healthz" for c in checks)
    # /healthz gives Postgres and Redis HEALTH_TIMEOUT_SECONDS each: let a check see its 503.
    assert all(seconds(c["timeout"]) > 2 * HEALTH_TIMEOUT_SECONDS for c in checks)
    assert WEB["kill_signal"] == "SIGTERM"
    assert 0 < seconds(WEB["kill_timeout"]) <= FLY_MAX_KILL_TIMEOUT
    settings_from(WEB["env"], monkeypatch)  # the [env] values are valid settings


def test_worker_config_matches_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "http_service" not in WORKER and "services" not in WORKER, "the worker is private"
    assert WORKER["processes"] == {"worker": "arq jobs.WorkerSettings"}
    settings = settings_from(WORKER["env"], monkeypatch)
    default_port = Settings.model_fields["worker_health_port"].default

    (check,) = WORKER["checks"].values()
    assert check["type"] == "http" and check["path"] == "/healthz"
    assert check["method"].upper() == "GET"
    assert check["port"] == settings.worker_health_port == default_port
    assert set(check.get("processes", ["worker"])) <= set(WORKER["processes"])
    metrics = WORKER["metrics"]
    assert (metrics["port"], metrics["path"]) == (settings.worker_health_port, "/metrics")
    for table in (*WORKER.get("restart", []), *WORKER.get("vm", []), metrics):
        assert set(table.get("processes", [])) <= set(WORKER["processes"])

    assert WORKER["kill_signal"] == "SIGTERM"
    kill_timeout = seconds(WORKER["kill_timeout"])
    # The code's own bound on a shutdown, with the margin, within what Fly waits.
    assert worst_case_shutdown(settings) + shutdown_margin(settings) <= kill_timeout
    assert kill_timeout <= FLY_MAX_KILL_TIMEOUT


def worst_case_shutdown(settings: Settings) -> float:
    """The longest a worker takes after SIGTERM, by its own bounds: running jobs get
    WORKER_SHUTDOWN_GRACE_SECONDS, a handler still going is cancelled and gets
    JOB_ABANDON_GRACE_SECONDS before it is abandoned, and the steps that need Redis or Postgres
    (giving runs back, closing) get CLOSE_SECONDS together (jobs/worker/process.py)."""
    return (
        settings.worker_shutdown_grace_seconds + settings.job_abandon_grace_seconds + CLOSE_SECONDS
    )


def shutdown_margin(settings: Settings) -> float:
    """What kill_timeout keeps beyond a shutdown: a tenth of the graces (a Machine slower than
    this one, a loaded event loop) and a lease (JOB_LEASE_SECONDS) for the last outcome writes
    and Python's exit to land before SIGKILL."""
    graces = settings.worker_shutdown_grace_seconds + settings.job_abandon_grace_seconds
    return graces / 10 + settings.job_lease_seconds


async def test_kill_timeout_covers_the_measured_worst_case_shutdown(
    env: dict[str, str], spawn, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real worker with fly.worker.toml's settings and a run whose handler ignores
    cancellation (the worst case: it uses the whole shutdown grace, then the whole abandon
    grace), SIGTERMed as Fly does: it exits, and within kill_timeout less the margin.
    Before: kill_timeout 35 was the worst case itself, with nothing to spare."""
    from service import queue
    from tests.support.jobs import add_job, make_shop, wait_for_status

    settings = settings_from(WORKER["env"], monkeypatch)
    health = free_port()  # the TOML's port may be taken by another suite on this machine
    values = {**env, **WORKER["env"], "WORKER_HEALTH_PORT": str(health)}
    for name in ("JOB_ABANDON_GRACE_SECONDS", "JOB_LEASE_SECONDS"):
        values.pop(name, None)  # the production defaults, not the test suite's
    command = [sys.executable, "-m", "arq", "tests.support.hostile_worker.WorkerSettings"]
    worker = spawn(command, values, "worker-worst-case")
    wait_for_http(f"http://127.0.0.1:{health}/healthz", timeout=30)
    redis = queue.connect(env["REDIS_URL"])
    try:
        shop = await make_shop(database)
        stuck = await add_job(database, redis, shop, {}, job_type="swallows_cancel_slowly")
        await wait_for_status(database, stuck, {"processing"})
    finally:
        await redis.aclose()

    kill_timeout = seconds(WORKER["kill_timeout"])
    sent = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.wait, kill_timeout)  # Fly's SIGKILL comes then
    measured = time.monotonic() - sent
    assert code == 0, worker.output
    graces = settings.worker_shutdown_grace_seconds + settings.job_abandon_grace_seconds
    assert measured >= graces, "not the worst case: the stuck run was not waited for"
    assert measured <= worst_case_shutdown(settings)
    assert measured <= kill_timeout - shutdown_margin(settings), (measured, kill_timeout)
    # The stuck run's job was given back for the next worker, not lost with the process.
    job = await wait_for_status(database, stuck, {"retrying", "pending"})
    assert job.lease_owner is None
    print(
        f"worst-case shutdown {measured:.2f}s; bound {worst_case_shutdown(settings):g}s; "
        f"margin {shutdown_margin(settings):g}s; kill_timeout {kill_timeout:g}s"
    )


@pytest.mark.parametrize("app", [WEB, WORKER], ids=["web", "worker"])
def test_env_tables_hold_known_settings_and_no_secrets(app: dict[str, Any]) -> None:
    names = set(app["env"])
    assert not names & {*SECRETS, *OPTIONAL_SECRETS}, "secrets belong in `fly secrets set`"
    assert names <= setting_names() | RUNTIME_VARIABLES, names - setting_names()
    assert all(isinstance(value, str) for value in app["env"].values()), "Fly wants strings"
    assert app["env"]["SHOPIFY_APP_URL"] == f"https://{WEB['app']}.fly.dev"
    assert app["primary_region"] == WEB["primary_region"], "keep both apps near the data"


def test_process_commands_import(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from arq.utils import import_string
    from starlette.applications import Starlette
    from uvicorn.importer import import_from_string

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    words = cmd_words(dockerfile_cmd())
    assert isinstance(import_from_string(words[words.index("uvicorn") + 1]), Starlette)

    program, target = shlex.split(WORKER["processes"]["worker"])
    assert program == "arq"
    worker_settings = import_string(target)
    assert worker_settings.functions and callable(worker_settings.on_startup)


def test_deploy_guide_matches_the_configs() -> None:
    section = (ROOT / "docs" / "deploy.md").read_text()
    for config in set(re.findall(r"-c (\S+\.toml)", section)):
        assert (ROOT / config).is_file(), config
    assert "fly deploy -c fly.web.toml" in section and "fly deploy -c fly.worker.toml" in section
    for group in re.findall(r"fly scale count (\w+)=\d+ -c fly\.worker\.toml", section):
        assert group in WORKER["processes"]
    assert re.search(r"fly scale count \w+=\d+ -c fly\.worker\.toml", section)
    for secret in (*SECRETS, *OPTIONAL_SECRETS):
        assert secret in section, f"docs/deploy.md must say how {secret} is set"
    for app in (WEB["app"], WORKER["app"]):
        assert app in section
    url = WEB["env"]["SHOPIFY_APP_URL"]
    assert f'url = "{url}/proxy"' in section and f'uri = "{url}/webhooks"' in section
