"""Fake Schneider meters for tests: they live in :mod:`simulator.modbus_device`, shared with the simulator."""

from simulator.modbus_device import (
    TYPICAL_VALUES,
    ConcurrencyTracker,
    FakeMeter,
    FakeMeterServer,
    FramerName,
    closed_port,
    encode_value,
    start_fake_meter,
    typical_values,
)

__all__ = [
    "TYPICAL_VALUES",
    "ConcurrencyTracker",
    "FakeMeter",
    "FakeMeterServer",
    "FramerName",
    "closed_port",
    "encode_value",
    "start_fake_meter",
    "typical_values",
]
