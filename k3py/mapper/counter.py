"""`k3py mapper counter`: the KubeEdge counter demo's pseudo device. Desired `status` ON counts
up once a second and reports the count as the twin's actual value; OFF reports 0 once and stops;
a command equal to the current one is ignored (the SDK also drops repeated desired values)."""

from __future__ import annotations

from k3py.mapper.sdk import Mapper

__all__ = ["CounterMapper", "STATUS"]

STATUS = "status"


class CounterMapper(Mapper):
    properties = (STATUS,)
    interval = 1.0

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.on = False
        self.count = 0
        self._report_zero = True  # the device shows 0 until switched on

    def write(self, prop: str, value: str) -> None:
        command = value.strip().upper()
        if command not in ("ON", "OFF"):
            raise ValueError(f"expected ON or OFF, got {value!r}")
        if command == "ON" and not self.on:
            self.on = True
        elif command == "OFF" and self.on:
            self.on = False
            self.count = 0
            self._report_zero = True

    def read(self, prop: str) -> int | None:
        if self.on:
            self.count += 1
            return self.count
        if self._report_zero:
            self._report_zero = False
            return 0
        return None
