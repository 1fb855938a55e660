"""`k3py mapper dht11|simulated|counter --device NAME [...]`: run a built-in device mapper
(k3py.mapper) against the node's MQTT broker until SIGTERM; flags in k3py.cli.flags (MAPPER)."""

from __future__ import annotations

import logging

from k3py import PROGRAM
from k3py.cli.flags import MAPPER, HelpRequested, UsageError, help_text, mapper_options
from k3py.mapper.options import KINDS, MapperOptions
from k3py.mapper.sdk import Mapper, MapperError, run

__all__ = ["mapper_command", "build_mapper"]

_USAGE = f"{PROGRAM} {MAPPER} {'|'.join(KINDS)} --device NAME [OPTIONS]"


def _help() -> str:
    return help_text(MAPPER).replace(f"{PROGRAM} {MAPPER} [OPTIONS]", _USAGE)


def build_mapper(kind: str, opts: MapperOptions) -> Mapper:
    interval = {"interval": opts.interval} if opts.interval else {}
    if kind == "dht11":
        from k3py.mapper.dht import DHT11Mapper
        return DHT11Mapper(pin=opts.pin, pin_mode=opts.pin_mode, **interval)
    if kind == "simulated":
        from k3py.mapper.simulated import SimulatedMapper
        return SimulatedMapper(seed=opts.seed, **interval)
    from k3py.mapper.counter import CounterMapper
    return CounterMapper(**interval)


def mapper_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        raise HelpRequested(_help())
    kind = argv[0]
    if kind not in KINDS:
        raise UsageError(f"unknown mapper {kind!r}; usage: {_USAGE}")
    try:
        opts = mapper_options(argv[1:])
    except HelpRequested:
        raise HelpRequested(_help()) from None
    if not opts.device:
        raise UsageError(f"--device is required (the Device object's name); usage: {_USAGE}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        mapper = build_mapper(kind, opts)
        return run(mapper, opts.device, namespace=opts.namespace, broker=opts.broker,
                   username=opts.broker_username, password=opts.broker_password,
                   ca_file=opts.broker_ca)
    except MapperError as e:
        raise UsageError(str(e)) from None
