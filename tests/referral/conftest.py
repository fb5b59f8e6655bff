"""The referral tests reuse the delivery tests' Redis key prefix (deleted after each test)."""

from tests.delivery.conftest import redis_prefix

__all__ = ["redis_prefix"]
