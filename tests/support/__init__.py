"""What tests share besides fixtures, imported as `from tests.support.x import ...`.

- config: the repository root and the test app's Shopify key and secret
- net: free ports, waiting for an HTTP answer, ASGI apps served in a thread
- processes: the web and worker as real subprocesses
- proxy: app-proxy URLs signed as Shopify signs them
- breakable: servers a test may break (a Redis of its own, Postgres stopped, a relay cut)
- jobs: job rows and queue entries put in directly, waits for outcomes, a handler's context
- faults: the fault suite's size knob, figures and effect checks
- browser: Chromium for Playwright, screenshots, whether a test failed

Fixtures live in conftest files (tests/conftest.py for the servers, settings, Postgres and
Redis); test modules never import a conftest or another test module.
"""
