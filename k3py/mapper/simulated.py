"""`k3py mapper simulated`: a seeded, deterministic temperature/humidity series on the same twins
as the DHT11 mapper (`temperature-status` like "23.4C", `humidity`), so demos and tests run on
any machine. The series is a pure function of (seed, step): `reading(seed, step)`."""

from __future__ import annotations

import math
import random

from k3py.mapper.dht import HUMIDITY, TEMPERATURE, format_temperature
from k3py.mapper.sdk import Mapper

__all__ = ["SimulatedMapper", "reading"]


def reading(seed: int, step: int) -> tuple[float, int]:
    """(temperature °C with one decimal, relative humidity %) at `step`: a slow daily-like wave
    plus seeded noise; the same (seed, step) always gives the same reading."""
    noise = random.Random(seed * 1_000_003 + step)
    temperature = 22.0 + 3.0 * math.sin(2 * math.pi * step / 60) + noise.gauss(0, 0.3)
    humidity = 45 + 10 * math.cos(2 * math.pi * step / 90) + noise.gauss(0, 1.0)
    return round(temperature, 1), max(0, min(100, round(humidity)))


class SimulatedMapper(Mapper):
    properties = (TEMPERATURE, HUMIDITY)
    types = {TEMPERATURE: "string", HUMIDITY: "int"}

    def __init__(self, seed: int = 0, interval: float = 2.0) -> None:
        self.seed = seed
        self.interval = interval
        self.step = 0
        self._now = reading(seed, 0)

    def read(self, prop: str) -> str | int:
        if prop == TEMPERATURE:  # first of the pair: take the next reading
            self._now = reading(self.seed, self.step)
            self.step += 1
            return format_temperature(self._now[0])
        return self._now[1]
