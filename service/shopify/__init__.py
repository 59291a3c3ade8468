"""Everything Shopify-specific: signatures, webhooks, OAuth and the Admin API client."""
