"""The job types shopjobs ships. Compliance webhooks and the diagnostic echo are shopjobs' own
(jobs/registry.py); the product examples below are an app like yours, loaded because the
default SHOPJOBS_APP names this package (docs/your-app.md).
"""

from __future__ import annotations

from jobs.types import App, WebhookJob
from service.core.settings import Settings


def shopjobs_app(settings: Settings) -> App:
    """The shipped examples, as one app."""
    from jobs.builtin import catalogue_audit, inventory_report, product_summary

    summary = product_summary.job_type(show_inventory=settings.product_summary_show_inventory)
    return App(
        job_types=[
            summary,
            inventory_report.JOB_TYPE,
            catalogue_audit.JOB_TYPE,
            catalogue_audit.PAGE_JOB_TYPE,
        ],
        webhooks={"products/update": [WebhookJob(summary, product_summary.input_from_webhook)]},
    )
