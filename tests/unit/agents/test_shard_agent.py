"""When a lone worker's shard agent stops fetching its own router's records back, and how its shards move on over
them (`ShardAgent`), with no broker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import TopicPartition

from revpulse.agents.base import ProducerService
from revpulse.agents.shard_agent import PROBE_INTERVAL, ShardAgent
from revpulse.agents.snapshots import SnapshotStore
from revpulse.streams.engine import EngineConfig
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import Shard
from revpulse.streams.rollup import Rollup
from revpulse.topics import shard_topic
from tests.support.deployment import settings_for


class _Consumer:
    """The part of a consumer the shard agent steers: assignment, pauses and seeks."""

    def __init__(self, topic: str, partitions: list[int]) -> None:
        self.assigned = {TopicPartition(topic, p) for p in partitions}
        self.stopped: set[TopicPartition] = set()
        self.seeks: dict[int, int] = {}
        self.positions: dict[int, int] = {}
        self.ends: dict[int, tuple[int, float]] = {}  # partition -> (high watermark, when fetched: wall time)

    def fetched(self, partition: int, position: int, highwater: int) -> None:
        """A fetch answered now: the consumer is at `position`, the partition ends at `highwater`."""
        self.positions[partition] = position
        time.sleep(0.002)  # later than anything before it, at the milliseconds aiokafka keeps
        self.ends[partition] = (highwater, time.time())

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends[tp.partition][0] if tp.partition in self.ends else None

    def last_poll_timestamp(self, tp: TopicPartition) -> int | None:
        return int(self.ends[tp.partition][1] * 1000) if tp.partition in self.ends else None

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp.partition]

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.stopped)

    def pause(self, *partitions: TopicPartition) -> None:
        self.stopped |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.stopped -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition.partition] = offset
        self.positions[partition.partition] = offset


def _agent(tmp_path: Path) -> tuple[ShardAgent, _Consumer, dict[TopicPartition, int]]:
    """An agent owning shards 0 and 1 at offsets 5 and 3, both open to the local path; its commits."""
    settings = settings_for(tmp_path)
    config = EngineConfig()
    producer = ProducerService(settings)
    rollup = Rollup()
    snapshots = SnapshotStore(settings, config, producer, lambda role, reason: None)
    agent = ShardAgent(settings, config, producer, snapshots, rollup, Outputs(settings, rollup, dict))
    consumer = _Consumer(shard_topic(settings), [0, 1])
    agent.consumer = consumer  # type: ignore[assignment]
    for shard_id, offset in ((0, 5), (1, 3)):
        agent.shards[shard_id] = Shard(shard_id, config)
        agent.shards[shard_id].state.next_offset = offset
        agent.local_path.routed_sent({shard_id: (0, False)}, {shard_id: [range(0, offset)]})  # its gate
    commits: dict[TopicPartition, int] = {}

    async def commit(offsets: dict[TopicPartition, int]) -> None:
        commits.update(offsets)

    agent.commit = commit  # type: ignore[method-assign]
    return agent, consumer, commits


def _paused(agent: ShardAgent) -> set[int]:
    asyncio.run(agent._follow_router())
    assert agent.consumer is not None
    return {tp.partition for tp in agent.consumer.paused()}


def test_a_lone_router_s_shards_are_paused_once_read_to_their_end_and_move_on_over_its_sends(
    tmp_path: Path,
) -> None:
    agent, consumer, commits = _agent(tmp_path)
    topic = shard_topic(agent.settings)
    consumer.fetched(0, 5, 5)
    consumer.fetched(1, 3, 4)  # one record not read yet
    assert _paused(agent) == set(), "another router may write: every record is fetched"
    agent.sole_router = True
    assert _paused(agent) == {0}
    consumer.fetched(1, 4, 4)
    agent.shards[1].state.next_offset = 4
    assert _paused(agent) == {0, 1}

    agent.local_path.routed_sent({0: (0, True), 1: (0, True)}, {0: [range(5, 9)], 1: [range(4, 5)]})
    asyncio.run(agent.pass_own_sends())
    assert (agent.shards[0].state.next_offset, agent.shards[1].state.next_offset) == (9, 5)
    assert commits == {TopicPartition(topic, 0): 9, TopicPartition(topic, 1): 5}
    assert _paused(agent) == {0, 1} and consumer.seeks == {}


def test_a_gap_between_its_sends_resumes_the_partition_from_the_shard_s_offset(tmp_path: Path) -> None:
    agent, consumer, commits = _agent(tmp_path)
    topic = shard_topic(agent.settings)
    agent.sole_router = True
    consumer.fetched(0, 5, 5)
    consumer.fetched(1, 3, 3)
    assert _paused(agent) == {0, 1}
    # Offsets 7 and 8 of shard 0 are another writer's (a router the group has let go of).
    agent.local_path.routed_sent({0: (0, True)}, {0: [range(5, 7)]})
    agent.local_path.routed_sent({0: (0, True)}, {0: [range(9, 12)]})
    asyncio.run(agent.pass_own_sends())

    assert agent.shards[0].state.next_offset == 7 and commits == {TopicPartition(topic, 0): 7}
    assert consumer.seeks == {0: 7} and _paused(agent) == {1}, "not paused again before the gap is read"
    consumer.fetched(0, 12, 12)  # the fetch read 7 and 8, and skipped 9–11 as applied
    agent.shards[0].state.next_offset = 12
    agent.local_path.consumed(0, 12)
    assert _paused(agent) == {0, 1}


def test_a_paused_partition_is_read_to_its_end_again_after_the_probe_interval(tmp_path: Path) -> None:
    agent, consumer, _ = _agent(tmp_path)
    agent.sole_router = True
    consumer.fetched(0, 5, 5)
    consumer.fetched(1, 3, 3)
    assert _paused(agent) == {0, 1}
    agent._paused_at[0] -= PROBE_INTERVAL  # records another writer put after the last send show only so
    assert _paused(agent) == {1} and consumer.seeks == {0: 5}
    assert _paused(agent) == {1}, "the end it knows is from before the resume: a fresh fetch must say so"
    consumer.fetched(0, 8, 8)  # it read 5–7, another writer's
    agent.shards[0].state.next_offset = 8
    assert _paused(agent) == {0, 1}


def test_a_router_rebalance_resumes_every_paused_shard_from_its_offset(tmp_path: Path) -> None:
    agent, consumer, _ = _agent(tmp_path)
    agent.sole_router = True
    consumer.fetched(0, 5, 5)
    consumer.fetched(1, 3, 3)
    assert _paused(agent) == {0, 1}
    agent.local_path.router_rebalanced()  # its paths close until an ordinary send lands
    assert _paused(agent) == set() and consumer.seeks == {0: 5, 1: 3}
