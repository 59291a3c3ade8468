"""The web process: app proxy, webhooks, install, dashboard, and their plumbing."""
