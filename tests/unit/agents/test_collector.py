"""The worker's full collections: when they are due, and what a tick frees."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from revpulse.agents.collector import CollectionPolicy, Collector, resident_bytes

MIB = 2**20


def policy_after(at: float, rss: int) -> CollectionPolicy:
    policy = CollectionPolicy(growth=1.25, min_interval=10.0, max_interval=600.0)
    policy.collected(at, rss)
    return policy


def test_due_once_the_resident_size_grew_by_the_factor() -> None:
    policy = policy_after(100.0, 400 * MIB)
    assert not policy.due(120.0, 500 * MIB)  # 1.25× exactly is not more
    assert policy.due(120.0, 500 * MIB + 1)


def test_not_due_before_the_least_interval_however_it_grew() -> None:
    policy = policy_after(100.0, 400 * MIB)
    assert not policy.due(109.9, 4000 * MIB)
    assert policy.due(110.0, 4000 * MIB)


def test_due_on_the_clock_when_flat_busy_or_unmeasured() -> None:
    policy = policy_after(100.0, 400 * MIB)
    assert not policy.due(699.9, 400 * MIB)
    assert policy.due(700.0, 400 * MIB)
    assert policy.due(700.0, 400 * MIB, busy=True)
    assert not policy.due(650.0, None)
    assert policy.due(700.0, None)


def test_a_copy_running_postpones_a_collection_the_growth_asks_for() -> None:
    policy = policy_after(100.0, 400 * MIB)
    assert not policy.due(200.0, 800 * MIB, busy=True)
    assert policy.due(200.0, 800 * MIB, busy=False)


def test_the_reference_is_the_size_after_the_last_collection() -> None:
    policy = policy_after(100.0, 400 * MIB)
    policy.collected(200.0, 300 * MIB)
    assert policy.due(210.0, 376 * MIB)
    policy.collected(210.0, None)  # unmeasured: the reference stays
    assert policy.last_rss == 300 * MIB and policy.last_at == 210.0


def test_resident_bytes_reads_statm_and_gives_up_quietly(tmp_path: Path) -> None:
    statm = tmp_path / "statm"
    statm.write_text("5000 1200 300 10 0 900 0\n")

    assert resident_bytes(str(statm)) == 1200 * os.sysconf("SC_PAGE_SIZE")
    statm.write_text("garbage")
    assert resident_bytes(str(statm)) is None
    assert resident_bytes(str(tmp_path / "missing")) is None


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def frozen_cycle() -> weakref.ref[Node]:
    """A cycle that is alive at a freeze and garbage after it."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    gc.freeze()
    return weakref.ref(first)


def test_a_tick_frees_a_frozen_cycle_only_when_a_collection_is_due(unfrozen: None) -> None:
    trims: list[int] = []
    collector = Collector(policy=policy_after(0.0, 2**62), trim=lambda: trims.append(1))
    cycle = frozen_cycle()
    assert collector.tick(5.0) is False  # not due: the cycle stays, frozen
    gc.collect()
    assert cycle() is not None and gc.get_freeze_count() > 0
    assert collector.tick(600.0) is True
    assert cycle() is None
    assert trims == [1]
    assert gc.get_freeze_count() > 0  # the survivors are frozen again


def test_a_busy_tick_postpones_the_collection(unfrozen: None) -> None:
    busy = True
    collector = Collector(policy=policy_after(0.0, 1), trim=lambda: None, busy=lambda: busy)
    cycle = frozen_cycle()
    assert collector.tick(20.0) is False
    assert cycle() is not None
    busy = False
    assert collector.tick(21.0) is True
    assert cycle() is None
