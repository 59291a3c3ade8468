"""The previous release's processes keep working against a database this release migrated
(docs/deploy.md#upgrading-deploy-order): during a Fly deploy the release command (this
release's `db apply`) runs first, then Machines are replaced one at a time, so the previous
release's worker and web run for a while against the migrated schema, beside this release's.

The previous release (120a921) is taken from the repository's own history at test time
(`git archive`): its `service/` and `jobs/` are run as they shipped, with PYTHONPATH pointing
at them. Without the history (a shallow clone, an exported tree) the test is skipped, saying
so; the rows it would enqueue are also pinned as a fixture (previous_release_rows.json).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from arq.connections import ArqRedis
from databases import Database

from jobs.registry import job_types
from service.core.settings import Settings
from service.jobs_client import JobsClient
from tests.support.config import ROOT
from tests.support.jobs import wait_for_status
from tests.support.processes import Spawn

PREVIOUS_RELEASE = "120a921"
SHOP = "rolling-shop.myshopify.com"
TOKEN = "shpat_rolling"
PRODUCT = "gid://shopify/Product/8000000001"


@pytest.fixture
def previous_tree(tmp_path: Path) -> Path:
    """The previous release's `service/` and `jobs/`, from this repository's history."""
    has_commit = subprocess.run(
        ["git", "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], cwd=ROOT, check=False,
        capture_output=True,
    )  # fmt: skip
    if has_commit.returncode != 0:
        pytest.skip(f"no git history with {PREVIOUS_RELEASE} (shallow or exported tree)")
    tree = tmp_path / "previous"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", PREVIOUS_RELEASE, "service", "jobs", "shopify_emulator"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _old(tree: Path, env: dict[str, str], *args: str) -> str:
    """Run the previous release's CLI (`python -m service ...`); its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_the_previous_worker_runs_jobs_on_the_migrated_database(
    previous_tree: Path,
    emulator,  # type: ignore[no-untyped-def]
    settings: Settings,
    database: Database,
    redis: ArqRedis,
    spawn: Spawn,
    env: dict[str, str],
) -> None:
    shopify = emulator(shops={SHOP: TOKEN}, products=3, max_variants=2, seed=11)
    old_env = {**env, "SHOPIFY_ADMIN_URL": shopify.url, "PYTHONPATH": str(previous_tree)}
    # The shop as the previous release registers it: its token encrypted by its own CLI.
    _old(previous_tree, old_env, "shops", "add", SHOP, "--token", TOKEN)
    # This release's release command, as Fly runs it before replacing any Machine: the schema
    # (the test database is already at this release's; it must find nothing to do) and the
    # tokens, which the previous release's processes go on reading.
    release = subprocess.run(
        [sys.executable, "-m", "service", "db", "apply"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert release.returncode == 0, release.stderr
    worker = spawn(
        [sys.executable, "-m", "arq", "jobs.WorkerSettings"], old_env, "old-worker", previous_tree
    )
    ids: dict[uuid.UUID, str] = {}
    # Enqueued the old way: the previous release's JobsClient, through its CLI.
    for job_type, job_input in (
        ("echo", {"message": "old web"}),
        ("product_summary", {"product_id": PRODUCT}),
    ):
        out = _old(previous_tree, old_env, "jobs", "enqueue", job_type, "--shop", SHOP,
                   "--input", orjson.dumps(job_input).decode())  # fmt: skip
        ids[uuid.UUID(orjson.loads(out.strip().splitlines()[-1])["jobId"])] = f"old {job_type}"
    # And the new way, by this release's web or JobsClient while the old worker still runs:
    # whichever order the apps are deployed in, the other's jobs must run.
    client = JobsClient(database, redis, job_types(settings))
    new = await client.enqueue("echo", shop=SHOP, input={"message": "new web"})
    ids[new.id] = "new echo"
    for job_id, what in ids.items():
        job = await wait_for_status(database, job_id, {"completed", "failed"}, timeout=60)
        assert job.status == "completed", (what, job.error_message, worker.output[-3000:])
