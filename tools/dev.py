"""`make dev`: local servers, schema, demo shop, then web + worker + local Shopify under honcho.

Mirrors what Shopify CLI does for a `background` role: the processes get the same
environment, their logs are combined with a prefix each, Ctrl-C (or SIGTERM) stops all, and
if one dies the others are stopped and the command exits non-zero. The third process is the
Shopify emulator (`shopify_emulator`), serving the demo shop with its seeded products; the app
reaches its Admin API through SHOPIFY_ADMIN_URL, and a browser reaches the app through its
storefront's app proxy, and the app's embedded page (/app) through the emulator's admin.

`python -m tools.dev web|worker` starts one of the same processes for Shopify CLI
(`shopify app dev` runs it from shopify.web.toml and jobs/shopify.web.toml) with the
environment the CLI injects: its SHOPIFY_API_KEY, SHOPIFY_API_SECRET, HOST/APP_URL, SCOPES
and (for the web) PORT, and real Shopify instead of the emulator.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from service.core.settings import Settings
from tools import services

ROOT = Path(__file__).resolve().parent.parent
DEMO_SHOP = "demo-shop.myshopify.com"
DEMO_TOKEN = "dev-admin-token"
DEV_DEFAULTS = {
    "SHOPIFY_API_KEY": "dev-api-key",
    "SHOPIFY_API_SECRET": "dev-api-secret",
    "ENABLE_DIAGNOSTIC_JOBS": "true",
    "LOG_FORMAT": "text",
    "DASHBOARD_USERNAME": "admin",
    "DASHBOARD_PASSWORD": "dev-dashboard-password",
    "WEB_PORT": "8000",
    "WORKER_HEALTH_PORT": "3001",
    "WEB_METRICS_PORT": "9091",
    "SHOPIFY_EMULATOR_PORT": "8081",
    "DEMO_SHOP": DEMO_SHOP,
    "DEMO_TOKEN": DEMO_TOKEN,
    "PYTHONUNBUFFERED": "1",
}


def dev_environment() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("DATABASE_URL") or not env.get("REDIS_URL"):
        svc = services.start(ROOT / ".dev")
        env.setdefault("DATABASE_URL", svc.database_url)
        env.setdefault("REDIS_URL", svc.redis_url)
        print(f"dev: local Postgres on :{svc.pg_port}, Redis on :{svc.redis_port} (data in .dev/)")
    for key, value in DEV_DEFAULTS.items():
        env.setdefault(key, value)
    if not env.get("TOKEN_ENCRYPTION_KEYS"):
        env["TOKEN_ENCRYPTION_KEYS"] = dev_token_key(ROOT / ".dev" / "token-encryption-key")
    env.setdefault("SHOPIFY_APP_URL", f"http://127.0.0.1:{env['WEB_PORT']}")
    env.setdefault("SHOPIFY_ADMIN_URL", f"http://127.0.0.1:{env['SHOPIFY_EMULATOR_PORT']}")
    # The embedded page loads the emulator's stand-in for App Bridge (Shopify's CDN one talks
    # only to the real admin).
    env.setdefault("APP_BRIDGE_URL", f"{env['SHOPIFY_ADMIN_URL']}/cdn/shopifycloud/app-bridge.js")
    return env


def cli_environment() -> dict[str, str]:
    """The environment of one process started by Shopify CLI: its app settings kept (HOST or
    APP_URL is the app's URL, PORT the web's port), local servers when none are configured."""
    env = dict(os.environ)
    if not env.get("DATABASE_URL") or not env.get("REDIS_URL"):
        svc = services.start(ROOT / ".dev")
        env.setdefault("DATABASE_URL", svc.database_url)
        env.setdefault("REDIS_URL", svc.redis_url)
    for key, value in DEV_DEFAULTS.items():
        env.setdefault(key, value)
    if not env.get("TOKEN_ENCRYPTION_KEYS"):
        env["TOKEN_ENCRYPTION_KEYS"] = dev_token_key(ROOT / ".dev" / "token-encryption-key")
    if env.get("PORT"):
        env["WEB_PORT"] = env["PORT"]
    return env


def role(name: str) -> int:
    """Start the `web` or `worker` of Procfile.dev (exactly what `make dev` starts) for
    Shopify CLI. Both roles start at once: the servers and the schema are set up under a file
    lock, so they are set up once."""
    (ROOT / ".dev").mkdir(exist_ok=True)
    with open(ROOT / ".dev" / "cli.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        env = cli_environment()
        run(["-m", "service", "db", "apply"], env)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    honcho = shutil.which("honcho", path=env["PATH"]) or "honcho"
    os.chdir(ROOT)
    os.execve(honcho, [honcho, "-f", str(ROOT / "Procfile.dev"), "start", name], env)


def dev_token_key(path: Path) -> str:
    """This checkout's own key, made once and kept: a new key at every start would leave the
    tokens stored by the last run unreadable."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Fernet.generate_key().decode())
        path.chmod(0o600)
    return path.read_text().strip()


def run(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, *args], env=env, cwd=ROOT, check=True)


def rate_limit_line(env: dict[str, str]) -> str:
    """What the global start rate means for scaling: it, not the workers, is the ceiling."""
    defaults = Settings.model_fields
    most = int(env.get("RATE_LIMIT_MAX") or defaults["rate_limit_max"].default)
    window = float(
        env.get("RATE_LIMIT_WINDOW_SECONDS") or defaults["rate_limit_window_seconds"].default
    )
    if most == 0:
        return (
            "job starts are not rate limited (RATE_LIMIT_MAX=0, the default; "
            "docs/configuration.md shows an example limit)"
        )
    return (
        f"at most {most} job starts per {window:g} s across all workers (RATE_LIMIT_MAX, "
        "RATE_LIMIT_WINDOW_SECONDS): adding workers adds nothing past it; raise it, or set "
        "0 for none, before scaling (docs/deploy.md#7-scale-the-workers)"
    )


def main() -> int:
    env = dev_environment()
    run(["-m", "service", "db", "apply"], env)
    run(["-m", "service", "shops", "add", DEMO_SHOP, "--token", DEMO_TOKEN], env)
    print(f"dev: web on {env['SHOPIFY_APP_URL']}, worker health on :{env['WORKER_HEALTH_PORT']}")
    print(
        f"dev: job dashboard on {env['SHOPIFY_APP_URL']}/admin/ "
        f"(user {env['DASHBOARD_USERNAME']!r}, password from DASHBOARD_PASSWORD)"
    )
    web_metrics = (
        f"web :{env['WEB_METRICS_PORT']}/metrics, " if env["WEB_METRICS_PORT"] != "0" else ""
    )
    print(f"dev: metrics on {web_metrics}worker :{env['WORKER_HEALTH_PORT']}/metrics")
    print(f"dev: {rate_limit_line(env)}")
    emulator = f"http://127.0.0.1:{env['SHOPIFY_EMULATOR_PORT']}"
    print(f"dev: local Shopify on {emulator} (Admin API for the app: {env['SHOPIFY_ADMIN_URL']})")
    print(f"dev: demo storefront of {DEMO_SHOP} (the theme's Job button block): {emulator}/")
    print(
        f"dev: the app in {DEMO_SHOP}'s admin (embedded /app): "
        f"{emulator}/admin/apps/{env['SHOPIFY_API_KEY']}?shop={DEMO_SHOP}"
    )
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    honcho = shutil.which("honcho", path=env["PATH"]) or "honcho"
    return supervise([honcho, "-f", str(ROOT / "Procfile.dev"), "start"], env)


def supervise(command: list[str], env: dict[str, str]) -> int:
    """Run honcho until it ends. Ctrl-C (SIGINT) or SIGTERM is passed on to it once, and
    stopping that way is a success: exit 0, not the 130 that made `make dev` end with
    "make: *** Error 130". honcho runs in a session of its own, so the terminal's Ctrl-C
    reaches it only through here (twice, honcho would kill instead of stopping). A process
    that died by itself still makes `make dev` fail with honcho's code."""
    proc = subprocess.Popen(command, env=env, cwd=ROOT, start_new_session=True)
    asked: list[int] = []

    def stop(signum: int, frame: object) -> None:
        if not asked and proc.poll() is None:
            proc.send_signal(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
        asked.append(signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = proc.wait()
    if asked:
        print("dev: stopped", flush=True)
        return 0
    return code


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] in ("web", "worker"):
        raise SystemExit(role(sys.argv[1]))
    if len(sys.argv) > 1:
        raise SystemExit("usage: python -m tools.dev [web|worker]")
    raise SystemExit(main())
