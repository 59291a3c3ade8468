"""The web process: app-proxy routes, Shopify auth, settings, the store and the queue client."""
