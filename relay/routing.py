"""Choosing channels for a call, from a per-process snapshot of the enabled channels.

The snapshot (config.cache.channel_table) is reloaded when a channel is saved or deleted
anywhere (the shared ``CHANNELS`` version moves: config.cache) or after RELAY_CACHE_SECONDS.
It holds decrypted upstream keys in this process's memory only, never in the shared cache.
"""

import random
from dataclasses import dataclass, field
from typing import cast

from billing.pricing import priced_models
from config import cache
from relay.models import Channel

VERSION_KEY = cache.CHANNELS.name


@dataclass(frozen=True)
class ChannelInfo:
    id: int
    type: str
    name: str
    base_url: str
    api_key: str = field(repr=False)
    served_models: frozenset[str]
    model_mapping: dict
    groups: frozenset[str]
    priority: int
    weight: int

    def serves(self, *, group: str, model: str) -> bool:
        return model in self.served_models and group in self.groups

    def upstream_model(self, model: str) -> str:
        return self.model_mapping.get(model, model)


def _load() -> list[ChannelInfo]:
    return [
        ChannelInfo(
            id=row.id,
            type=row.type,
            name=row.name,
            base_url=row.base_url,
            api_key=row.api_key(),
            served_models=frozenset(row.served_models or ()),
            model_mapping=dict(row.model_mapping or {}),
            groups=frozenset(row.groups or ()),
            priority=row.priority,
            weight=row.weight,
        )
        for row in Channel.objects.filter(status=Channel.Status.ENABLED)
    ]


def channels_version() -> int:
    """The shared version of the channel table (sync: read it inside a burst)."""
    return cache.CHANNELS.read()


def enabled_channels(at_version: int | None = None) -> list[ChannelInfo]:
    """This process's snapshot of the enabled channels, reloaded when the shared version moved
    on (sync: it may read the database)."""
    if at_version is None:
        at_version = channels_version()
    snapshot = current_snapshot(at_version)
    if snapshot is None:
        snapshot = _load()
        cache.channel_table.put_at("enabled", at_version, snapshot)
    return snapshot


def current_snapshot(at_version: int) -> list[ChannelInfo] | None:
    """The snapshot if it is of ``at_version`` and fresh, else None (never reads the database,
    so the event loop may call it)."""
    found, snapshot = cache.channel_table.lookup_at("enabled", at_version)
    return cast("list[ChannelInfo]", snapshot) if found else None  # put by enabled_channels


def channels_for(
    channels: list[ChannelInfo], *, group: str, model: str, types: frozenset[str]
) -> list[ChannelInfo]:
    """Of ``channels``, those to try for the call, in order (priority, then weighted random)."""
    candidates = [
        channel
        for channel in channels
        if channel.type in types and channel.serves(group=group, model=model)
    ]
    return routing_order(candidates)


def routing_order(channels: list[ChannelInfo]) -> list[ChannelInfo]:
    """The order to try channels in: highest priority first, weighted random among equals."""
    by_priority: dict[int, list[ChannelInfo]] = {}
    for channel in channels:
        by_priority.setdefault(channel.priority, []).append(channel)
    order = []
    for priority in sorted(by_priority, reverse=True):
        pool = list(by_priority[priority])
        while pool:
            chosen = random.choices(pool, weights=[max(c.weight, 1) for c in pool])[0]  # noqa: S311
            pool.remove(chosen)
            order.append(chosen)
    return order


def usable_models(key) -> set[str]:
    """The models ``key`` may call: served by an enabled channel offered to its group, on its
    allow-list, and priced (sync: it may read the database). The model lists of /v1/models and
    Gemini's /v1beta/models both come from here."""
    offered = {
        model
        for channel in enabled_channels()
        if key.group in channel.groups
        for model in channel.served_models
        if key.allows_model(model)
    }
    return priced_models(offered)
