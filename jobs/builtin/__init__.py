"""The job types shopjobs ships: the product example, compliance webhooks, diagnostic echo."""
