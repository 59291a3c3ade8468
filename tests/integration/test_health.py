"""Health endpoints of both processes, against real servers and real subprocesses."""

import httpx

from service.core.settings import Settings
from tests.support.net import free_port, wait_for_http
from tests.support.processes import web_command, worker_command


async def test_web_healthz_ok(app_client: httpx.AsyncClient) -> None:
    response = await app_client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_web_healthz_degraded_not_failing_when_redis_is_down(
    settings: Settings, database: object
) -> None:
    """Liveness is the process and Postgres: Redis down only degrades enqueueing, so the
    platform keeps routing status reads and webhooks here (test_health_actions.py, for real)."""
    from service.app import create_app

    port = free_port()
    broken = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            response = await client.get("/healthz")
    assert response.status_code == 200
    # Which dependency, not the driver's text (it names hosts and ports to anyone who asks).
    assert response.json() == {"status": "degraded", "degraded": ["redis"]}
    assert str(port) not in response.text and "Error" not in response.text


async def test_unknown_path_and_method_are_json(app_client: httpx.AsyncClient) -> None:
    missing = await app_client.get("/nope")
    assert missing.status_code == 404 and "error" in missing.json()
    wrong = await app_client.post("/healthz")
    assert wrong.status_code == 405 and "error" in wrong.json()


def test_real_web_and_worker_processes(env: dict[str, str], spawn, database: object) -> None:
    port = free_port()
    web = spawn(web_command(port), env, "web")
    worker = spawn(worker_command(), env, "worker")
    assert wait_for_http(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    health = f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}"
    assert wait_for_http(f"{health}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{health}/other").status_code == 404
    assert web.popen.poll() is None and worker.popen.poll() is None
