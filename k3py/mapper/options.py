"""The options of `k3py mapper` with their defaults: read by k3py.cli.flags (the flags, env vars
and config keys of the `mapper` command) and by k3py.cli.mapper, which builds the mapper."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MapperOptions", "KINDS"]

KINDS = ("dht11", "simulated", "counter")


@dataclass(frozen=True)
class MapperOptions:
    device: str = ""
    namespace: str = ""  # "": KubeEdge's name-only topics (up to v1.16); else v1.17+ topics
    broker: str = "tcp://127.0.0.1:1883"
    broker_username: str = ""
    broker_password: str = ""
    broker_ca: str = ""
    interval: float = 0.0  # seconds; 0: the mapper's own (counter 1 s, others 2 s)
    pin: int = 11
    pin_mode: str = "bcm"
    seed: int = 0
