"""Shopify's leaky bucket for Admin GraphQL: query cost points, restored at a fixed rate.

A request is admitted when the bucket holds at least its requested cost; the requested cost
is taken, and the difference to the actual cost is given back once the query has run.
Pure arithmetic over an injected clock, so it is tested without waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LeakyBucket:
    maximum: float
    restore_rate: float  # points per second
    available: float
    updated_at: float  # the clock reading `available` refers to

    @classmethod
    def full(cls, maximum: float, restore_rate: float, now: float) -> LeakyBucket:
        return cls(maximum, restore_rate, maximum, now)

    def level(self, now: float) -> float:
        """Points available at `now` (restored since the last change, capped at the maximum)."""
        elapsed = max(0.0, now - self.updated_at)
        return min(self.maximum, self.available + elapsed * self.restore_rate)

    def take(self, cost: float, now: float) -> bool:
        """Take `cost` points if the bucket holds them; False (nothing taken) if it does not."""
        level = self.level(now)
        self.updated_at = now
        if level < cost:
            self.available = level
            return False
        self.available = level - cost
        return True

    def give_back(self, points: float, now: float) -> None:
        self.available = min(self.maximum, self.level(now) + max(0.0, points))
        self.updated_at = now

    def status(self, now: float) -> dict[str, float]:
        """`extensions.cost.throttleStatus` as Shopify reports it."""
        return {
            "maximumAvailable": float(self.maximum),
            "currentlyAvailable": round(self.level(now), 1),
            "restoreRate": float(self.restore_rate),
        }
