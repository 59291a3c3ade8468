"""The job types this deployment runs: the one list both the web and the worker read.

shopjobs' own types (the compliance webhooks Shopify requires, the diagnostic echo) are always
here; everything else comes from the app modules SHOPJOBS_APP names (docs/your-app.md), each
defining `shopjobs_app` (a jobs.App, or a function of the Settings returning one). The shipped
examples are one such app, `jobs.builtin`, the default. An app never edits this file.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any

from jobs.builtin import bulk_action, compliance, echo, flow_trigger
from jobs.types import App, JobType, WebhookJob
from service.core.settings import Settings


class AppError(Exception):
    """SHOPJOBS_APP names a module that cannot be loaded, or apps that clash."""


@lru_cache(maxsize=32)
def _load(module_name: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"SHOPJOBS_APP: cannot import {module_name!r}: {exc}") from exc
    found = getattr(module, "shopjobs_app", None)
    if found is None:
        raise AppError(f"SHOPJOBS_APP: module {module_name!r} defines no `shopjobs_app`")
    return found


def apps(settings: Settings) -> list[tuple[str, App]]:
    """(module name, App) for every module SHOPJOBS_APP names, in its order."""
    loaded: list[tuple[str, App]] = []
    for name in settings.app_modules:
        found = _load(name)
        app = found if isinstance(found, App) else found(settings)
        if not isinstance(app, App):
            raise AppError(f"SHOPJOBS_APP: {name}.shopjobs_app did not give a jobs.App")
        loaded.append((name, app))
    return loaded


def _core_types(settings: Settings) -> list[JobType]:
    types = [compliance.CUSTOMERS_DATA_REQUEST, compliance.CUSTOMERS_REDACT, compliance.SHOP_REDACT]
    if settings.enable_diagnostic_jobs:
        types += [echo.JOB_TYPE, echo.NOTIFY_JOB_TYPE]
    return types


def job_types(settings: Settings) -> dict[str, JobType]:
    """Enabled job types by name: shopjobs' own, then each app's (names must not clash)."""
    found: dict[str, tuple[str, JobType]] = {t.name: ("shopjobs", t) for t in _core_types(settings)}
    for module, app in apps(settings):
        for job_type in app.job_types:
            earlier = found.get(job_type.name)
            if earlier is not None and earlier[1] is not job_type:
                raise AppError(
                    f"SHOPJOBS_APP: job type {job_type.name!r} of {module} is already "
                    f"{earlier[0]}'s: rename it"
                )
            found[job_type.name] = (module, job_type)
    types = [job_type for _, job_type in found.values()]
    # Shopify's entry points' own types (docs/shopify-flow.md), when a type uses them.
    if flow_trigger.uses_triggers(types):
        types.append(flow_trigger.JOB_TYPE)
    if any(t.bulk_action is not None for t in types):
        types.append(bulk_action.JOB_TYPE)
    return {t.name: t for t in types}


def webhook_jobs(settings: Settings) -> dict[str, tuple[WebhookJob, ...]]:
    """Webhook topics that start jobs, each with every job it starts (several per topic: every
    app's, in SHOPJOBS_APP's order). Subscribe to them in shopify.app.toml.

    `app/uninstalled` is not here: the web handles it at once (the shop's proxy calls must
    stop right away). Topics neither here nor handled are recorded and acknowledged.
    """
    topics: dict[str, list[WebhookJob]] = {
        "customers/data_request": [
            WebhookJob(compliance.CUSTOMERS_DATA_REQUEST, compliance.data_request_input)
        ],
        "customers/redact": [
            WebhookJob(compliance.CUSTOMERS_REDACT, compliance.customer_redact_input)
        ],
        "shop/redact": [WebhookJob(compliance.SHOP_REDACT, compliance.shop_redact_input)],
    }
    for module, app in apps(settings):
        for topic, routes in app.webhooks.items():
            for route in routes:
                if any(r.job_type.name == route.job_type.name for r in topics.get(topic, ())):
                    raise AppError(
                        f"SHOPJOBS_APP: {module} starts {route.job_type.name!r} twice for {topic}"
                    )
                topics.setdefault(topic, []).append(route)
    return {topic: tuple(routes) for topic, routes in topics.items()}


def app_routes(settings: Settings) -> list[Any]:
    """Every app's Starlette routes, mounted into the web (service/app.py)."""
    return [route for _, app in apps(settings) for route in app.routes]


def app_loggers(settings: Settings) -> list[str]:
    """Logger names logged like shopjobs' own: each app module (so `getLogger(__name__)` in
    it and its submodules), and its `loggers`."""
    names: list[str] = []
    for module, app in apps(settings):
        for name in (module, *app.loggers):
            if name not in names and not name.startswith(("jobs", "service", "shopjobs")):
                names.append(name)
    return names
