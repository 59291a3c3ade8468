"""What both processes' Prometheus metrics share: the process collectors and latency buckets.

Each process builds its own registry (`process_registry()`), so building several apps or workers
in one process (the tests do) never registers a metric twice, and nothing registers at import.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def process_registry() -> CollectorRegistry:
    """A registry with the process's own CPU, memory, file and GC figures."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
