"""The event bus: bounded per-subscriber queues that never block the publisher."""

from __future__ import annotations

import threading

import pytest

from slam.events import EventBus, MapDelta, MapReset


def test_every_subscriber_gets_every_event_in_order() -> None:
    bus = EventBus()
    a, b = bus.subscribe(), bus.subscribe()
    events = [MapReset("reset"), MapDelta("mapping"), MapReset("loaded")]
    for e in events:
        bus.publish(e)
    for sub in (a, b):
        assert [sub.get(0.0) for _ in events] == events
        assert sub.get(0.0) is None and not sub.overflowed


def test_a_full_queue_drops_the_oldest_and_says_so() -> None:
    bus = EventBus()
    sub = bus.subscribe(maxsize=2)
    for i in range(5):
        bus.publish(MapReset(str(i)))
    assert sub.overflowed and sub.dropped == 3
    assert [sub.get(0.0) for _ in range(2)] == [MapReset("3"), MapReset("4")]
    sub.clear_overflow()
    assert not sub.overflowed


def test_a_closed_subscription_gets_nothing_more() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    assert bus.has_subscribers()
    sub.close()
    sub.close()  # idempotent
    bus.publish(MapReset("reset"))
    assert not bus.has_subscribers() and len(sub) == 0


def test_get_waits_for_an_event_until_its_deadline() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    assert sub.get(0.01) is None
    t = threading.Thread(target=bus.publish, args=(MapReset("late"),))
    t.start()
    try:
        assert sub.get(10.0) == MapReset("late")
    finally:
        t.join()


def test_a_queue_needs_room() -> None:
    with pytest.raises(ValueError):
        EventBus().subscribe(maxsize=0)
