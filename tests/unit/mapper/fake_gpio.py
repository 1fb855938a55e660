"""A fake `RPi.GPIO` with a DHT11 on one pin: only the hardware is faked, the PyPI `dht11`
package's own decoding runs against it.

The sensor follows its datasheet: after the host holds the line LOW for >= 18 ms and releases it
(input with pull-up), it waits 20-40 us, pulls LOW 80 us, HIGH 80 us, then sends 40 bits
(humidity int, humidity decimal, temperature int, temperature decimal, checksum), each a 50 us
LOW then HIGH for 26-28 us (0) or 70 us (1), ends with 50 us LOW and releases the line.
`input()` samples that waveform in virtual time, `sample_us` per call, like RPi.GPIO's few
microseconds per call on a Pi. Faults: "checksum" (one bit flipped), "missing" (the sensor stops
after 30 bits), "silent" (no answer: the start signal was too short or the sensor is absent)."""

from __future__ import annotations

import time
import types
from collections import deque

BCM, BOARD = 11, 10
OUT, IN = 0, 1
LOW, HIGH = 0, 1
PUD_UP, PUD_DOWN, PUD_OFF = 22, 21, 20


class FakeDHT11Line:
    def __init__(self, humidity: tuple[int, int] = (40, 0),
                 temperature: tuple[int, int] = (24, 0), sample_us: float = 2.5) -> None:
        self.humidity = humidity
        self.temperature = temperature
        self.sample_us = sample_us
        self.faults: deque[str] = deque()
        self.reads = 0
        self._low_since: float | None = None
        self._wave: list[tuple[float, int]] = []  # (end time us, level) segments
        self._t = 0.0

    def frame(self) -> list[int]:
        data = [*self.humidity, *self.temperature]
        return data + [sum(data) & 0xFF]

    def _start(self, held_low_s: float) -> None:
        self.reads += 1
        fault = self.faults.popleft() if self.faults else ""
        self._t = 0.0
        if held_low_s < 0.018 or fault == "silent":
            self._wave = []  # the line stays HIGH (pull-up)
            return
        bits = [(byte >> (7 - i)) & 1 for byte in self.frame() for i in range(8)]
        if fault == "checksum":
            bits[20] ^= 1
        if fault == "missing":
            bits = bits[:30]
        segments = [(30.0, HIGH), (80.0, LOW), (80.0, HIGH)]
        for bit in bits:
            segments += [(50.0, LOW), (70.0 if bit else 27.0, HIGH)]
        segments.append((50.0, LOW))
        end = 0.0
        self._wave = []
        for length, level in segments:
            end += length
            self._wave.append((end, level))

    def level(self) -> int:
        t = self._t
        self._t += self.sample_us
        for end, level in self._wave:
            if t < end:
                return level
        return HIGH

    # ---- what the GPIO functions do to the line

    def setup(self, direction: int) -> None:
        if direction == IN and self._low_since is not None:
            self._start(time.monotonic() - self._low_since)
            self._low_since = None

    def output(self, value: int) -> None:
        self._low_since = time.monotonic() if value == LOW else None


def make_gpio(line: FakeDHT11Line, pin: int) -> tuple[types.ModuleType, types.ModuleType]:
    """(RPi package, RPi.GPIO module) to put in sys.modules."""
    gpio = types.ModuleType("RPi.GPIO")
    state = {"mode": None, "cleaned": 0}

    def setmode(mode: int) -> None:
        state["mode"] = mode

    def check(p: int) -> None:
        if state["mode"] is None:
            raise RuntimeError("Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) "
                               "or GPIO.setmode(GPIO.BCM)")
        if p != pin:
            raise AssertionError(f"the sensor is on pin {pin}, not {p}")

    def setup(p: int, direction: int, pull_up_down: int = PUD_OFF) -> None:
        check(p)
        line.setup(direction)

    def output(p: int, value: int) -> None:
        check(p)
        line.output(value)

    def input_(p: int) -> int:
        check(p)
        return line.level()

    def cleanup(*_a: object) -> None:
        state["cleaned"] += 1

    for name, value in dict(BCM=BCM, BOARD=BOARD, OUT=OUT, IN=IN, LOW=LOW, HIGH=HIGH,
                            PUD_UP=PUD_UP, PUD_DOWN=PUD_DOWN, PUD_OFF=PUD_OFF, setmode=setmode,
                            setup=setup, output=output, input=input_, cleanup=cleanup,
                            setwarnings=lambda flag: None, state=state).items():
        setattr(gpio, name, value)
    package = types.ModuleType("RPi")
    package.GPIO = gpio  # type: ignore[attr-defined]
    return package, gpio
