"""How a bulk operation can end badly, as the exceptions a job sees (service/shopify/bulk.py).

NonRetryableError subclasses fail the job at once: running it again would end the same way
(FAILED with a permanent errorCode, CANCELED, an expired result, partial data). The one error
Shopify calls intermittent is retried, as a new operation.
"""

from __future__ import annotations

from jobs.types import NonRetryableError

# Shopify says these may be intermittent: the job is retried (a new operation).
RETRYABLE_ERROR_CODES = ("INTERNAL_SERVER_ERROR",)


class BulkOperationFailed(NonRetryableError):
    """Shopify ended the operation FAILED (errorCode in the message), or refused to start it."""


class BulkOperationRetryable(Exception):
    """Shopify failed the operation with an error it calls intermittent: the job retries."""


class BulkOperationCanceled(NonRetryableError):
    """The operation was canceled (not by this job's own cancellation)."""


class BulkResultExpired(NonRetryableError):
    """The operation's result expired (Shopify keeps it 7 days): run the job again."""


class BulkPartialData(NonRetryableError):
    """The operation failed after writing part of its result; partial data is not used."""
