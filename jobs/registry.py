"""The job types this deployment runs: the one list both the web and the worker read."""

from __future__ import annotations

from jobs.builtin import (
    bulk_action,
    catalogue_audit,
    compliance,
    echo,
    flow_trigger,
    inventory_report,
    product_summary,
)
from jobs.types import JobType, WebhookJob
from service.core.settings import Settings


def job_types(settings: Settings) -> dict[str, JobType]:
    """Enabled job types by name. Add your own types to `types` below."""
    types: list[JobType] = [
        product_summary.job_type(show_inventory=settings.product_summary_show_inventory),
        inventory_report.JOB_TYPE,
        compliance.CUSTOMERS_DATA_REQUEST,
        compliance.CUSTOMERS_REDACT,
        compliance.SHOP_REDACT,
        catalogue_audit.JOB_TYPE,
        catalogue_audit.PAGE_JOB_TYPE,
    ]
    if settings.enable_diagnostic_jobs:
        types += [echo.JOB_TYPE, echo.NOTIFY_JOB_TYPE]
    # Shopify's entry points' own types (docs/shopify-flow.md), when a type uses them.
    if flow_trigger.uses_triggers(types):
        types.append(flow_trigger.JOB_TYPE)
    if any(t.bulk_action is not None for t in types):
        types.append(bulk_action.JOB_TYPE)
    return {t.name: t for t in types}


def webhook_jobs(settings: Settings) -> dict[str, WebhookJob]:
    """Webhook topics that start a job. Subscribe to them in shopify.app.toml.

    `app/uninstalled` is not here: the web handles it at once (the shop's proxy calls must
    stop right away). Topics neither here nor handled are recorded and acknowledged.
    """
    return {
        "customers/data_request": WebhookJob(
            compliance.CUSTOMERS_DATA_REQUEST, compliance.data_request_input
        ),
        "customers/redact": WebhookJob(
            compliance.CUSTOMERS_REDACT, compliance.customer_redact_input
        ),
        "shop/redact": WebhookJob(compliance.SHOP_REDACT, compliance.shop_redact_input),
        "products/update": WebhookJob(
            product_summary.job_type(show_inventory=settings.product_summary_show_inventory),
            product_summary.input_from_webhook,
        ),
    }
