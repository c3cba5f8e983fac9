"""The suite's cache (Redis, under the test database's own key prefix): clear only our
keys, never the whole Redis that other runs and the app may share."""

from __future__ import annotations

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache


def redis_client(alias: str = "default"):
    cache = caches[alias]
    assert isinstance(cache, RedisCache), f"the {alias!r} cache is {type(cache).__name__}, not Redis"
    return cache._cache.get_client(write=True)


def delete_prefix(client, prefix: str) -> int:
    """Delete every key under ``prefix:`` (SCAN, never KEYS or FLUSHDB); how many."""
    deleted = 0
    batch = []
    for key in client.scan_iter(match=f"{prefix}:*", count=500):
        batch.append(key)
        if len(batch) == 500:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


def clear_cache(alias: str = "default") -> None:
    """Empty the cache of this run: the prefix's keys on Redis; any other backend (a
    test's override, in the test database) clears as it always does."""
    cache = caches[alias]
    if isinstance(cache, RedisCache):
        delete_prefix(redis_client(alias), cache.key_prefix)
    else:
        cache.clear()
