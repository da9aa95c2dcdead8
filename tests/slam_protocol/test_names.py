"""The wire's vocabulary and default endpoints are defined once."""

from __future__ import annotations

import slam_protocol as proto


def test_sensors_are_the_cores_sensors() -> None:
    from slam.config import SENSORS as CORE_SENSORS  # the core keeps its own type

    assert tuple(CORE_SENSORS) == proto.SENSORS
    assert proto.Sensor("rgbd") is proto.Sensor.RGBD and proto.Sensor.RGBD == "rgbd"
    assert f"{proto.Sensor.STEREO}" == "stereo"


def test_default_endpoints_are_loopback_ports_5555_to_5557() -> None:
    assert proto.DEFAULT_PORTS == {"pub": 5555, "cmd": 5556, "ingest": 5557}
    assert proto.DEFAULT_PUB_ENDPOINT == "tcp://127.0.0.1:5555"
    assert proto.DEFAULT_CMD_ENDPOINT == "tcp://127.0.0.1:5556"
    assert proto.DEFAULT_INGEST_ENDPOINT == "tcp://127.0.0.1:5557"


def test_map_names_are_plain_names() -> None:
    for good in ("office", "lab-2", "a_b.map", "9"):
        assert proto.MAP_NAME_RE.fullmatch(good), good
    for bad in ("", "../x", "/tmp/x", "-x", "x.mapx", "a b", "x" * 65):
        assert not proto.MAP_NAME_RE.fullmatch(bad), bad
