"""The Python mapper SDK (k3py.mapper.sdk) and the built-in mappers (dht11, simulated, counter).

Imports only third-party libraries and itself: it runs in a mapper pod, next to the agent, and is
usable from pip without the rest of k3py. `topics` holds the KubeEdge wire names both ends use;
the agent's device twin imports it without paying for the SDK (hence the lazy names below)."""

from __future__ import annotations

from typing import Any

__all__ = ["Mapper", "MapperError", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from k3py.mapper import sdk
        return getattr(sdk, name)
    raise AttributeError(name)
