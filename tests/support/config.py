"""Constants every kind of test agrees on: where the repository is, and the test app's keys."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-api-secret"
TEST_API_KEY = "test-api-key"
# The suite's own key for shops' tokens (TOKEN_ENCRYPTION_KEYS), made for it and only for it.
TEST_TOKEN_KEYS = "sj8ySmE8-lxd2OMc-ZqD2lFMcqbEDdGJ4yNK_EsiEwM="
