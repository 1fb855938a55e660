"""`k3py mapper dht11`: a DHT11 on a Raspberry Pi's GPIO through the PyPI `dht11` package
(RPi.GPIO imported lazily, so the SDK imports anywhere). Reports `temperature-status` like the
upstream KubeEdge temperature demo ("24C") and `humidity` as a second twin; bad reads retried."""

from __future__ import annotations

import time
from typing import Any

from k3py.mapper.sdk import Mapper, MapperError

__all__ = ["DHT11Mapper", "TEMPERATURE", "HUMIDITY", "format_temperature", "PIN_MODES"]

TEMPERATURE = "temperature-status"
HUMIDITY = "humidity"
PIN_MODES = ("bcm", "board")


def format_temperature(celsius: float) -> str:
    """As the upstream demo mapper: "24C" (a decimal only when the sensor gives one)."""
    return f"{celsius:g}C"


class DHT11Mapper(Mapper):
    properties = (TEMPERATURE, HUMIDITY)
    types = {TEMPERATURE: "string", HUMIDITY: "int"}
    retries = 0  # the sensor read retries itself below

    def __init__(self, pin: int = 11, pin_mode: str = "bcm", interval: float = 2.0,
                 attempts: int = 10, retry_delay: float = 1.0) -> None:
        if pin_mode not in PIN_MODES:
            raise MapperError(f"expected --pin-mode bcm or board, got {pin_mode!r}")
        self.pin = pin
        self.pin_mode = pin_mode
        self.interval = interval
        self.attempts = attempts
        # the DHT11 needs about a second between reads to answer again
        self.sensor_retry_delay = retry_delay
        self._gpio: Any = None
        self._sensor: Any = None
        self._last: Any = None

    def setup(self) -> None:
        try:
            import RPi.GPIO as GPIO
        except (ImportError, RuntimeError) as e:
            raise MapperError(f"the dht11 mapper needs a Raspberry Pi's GPIO (RPi.GPIO: {e}); "
                              f"elsewhere run 'k3py mapper simulated'") from None
        try:
            import dht11
        except ImportError:
            raise MapperError("the dht11 mapper needs the dht11 package: pip install "
                              "'k3py[pi]' (or pip install dht11)") from None
        GPIO.setwarnings(False)
        GPIO.setmode(GPIO.BCM if self.pin_mode == "bcm" else GPIO.BOARD)
        self._gpio = GPIO
        self._sensor = dht11.DHT11(pin=self.pin)

    def _measure(self) -> Any:
        """One valid reading: bad checksums and missing bits are read again."""
        errors = []
        for attempt in range(self.attempts):
            result = self._sensor.read()
            if result.is_valid():
                return result
            errors.append("checksum" if result.error_code == 2 else "missing data")
            if attempt + 1 < self.attempts:
                time.sleep(self.sensor_retry_delay)
        raise OSError(f"no valid DHT11 reading on pin {self.pin} ({self.pin_mode}) after "
                      f"{self.attempts} attempts: {', '.join(errors[-3:])}")

    def read(self, prop: str) -> str | int:
        if prop == TEMPERATURE:  # first of the pair: one sensor read serves both twins
            self._last = None  # humidity must not repeat a stale reading
            self._last = self._measure()
            return format_temperature(self._last.temperature)
        if self._last is None:
            raise OSError("no reading yet")
        return round(self._last.humidity)

    def close(self) -> None:
        if self._gpio is not None:
            self._gpio.cleanup()
