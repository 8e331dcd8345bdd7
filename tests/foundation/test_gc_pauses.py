"""Garbage-collection pauses: timed for every collection, warned about against the lease."""

from __future__ import annotations

import gc
import logging

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from foundation._metrics import REGISTRY
from foundation._node import Node
from foundation.membership import pauses
from foundation.membership.pauses import PauseWatch
from foundation.testing import NatsServer


def _pause_count(generation: str) -> float:
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        if family.name == "foundation_gc_pause_seconds":
            for sample in family.samples:
                if sample.name.endswith("_count") and sample.labels["generation"] == generation:
                    return sample.value
    return 0.0


def test_a_pause_longer_than_half_the_fence_window_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = PauseWatch()
    before = _pause_count("2")
    handle = watch.register(1e-9)  # every real collection is longer than half of this
    try:
        assert watch._callback in gc.callbacks
        with caplog.at_level(logging.WARNING, logger="foundation.membership"):
            gc.collect()
            gc.collect()
        warnings = [r for r in caplog.records if "garbage collection" in r.getMessage()]
        assert len(warnings) == 1  # at most once a minute
        assert "lease_ttl" in warnings[0].getMessage()
        assert watch.longest > 0
        assert _pause_count("2") >= before + 2
    finally:
        watch.unregister(handle)
    assert watch._callback not in gc.callbacks


def test_no_warning_while_pauses_stay_well_inside_the_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = PauseWatch()
    handle = watch.register(3600.0)
    try:
        with caplog.at_level(logging.WARNING, logger="foundation.membership"):
            gc.collect()
        assert not [r for r in caplog.records if "garbage collection" in r.getMessage()]
    finally:
        watch.unregister(handle)


@pytest.mark.nats
async def test_a_node_holding_a_lease_is_watched_until_it_stops(
    nats_server: NatsServer,
) -> None:
    node = Node(nats=nats_server.url, name="gc-1", failover=False)
    await node.start()
    try:
        assert pauses.WATCH._callback in gc.callbacks
        assert 0.7 < min(pauses.WATCH._windows.values()) <= 0.75  # lease 1 s - margin 0.25 s
    finally:
        await node.stop()
    assert not pauses.WATCH._windows
