"""Which partials partitions a worker's rollup fetches (`RollupAgent`), and where it reads on, with no broker."""

from __future__ import annotations

from aiokafka import TopicPartition

from revpulse.agents.rollup_agent import RollupAgent
from revpulse.settings import Settings
from revpulse.streams.rollup import Rollup

TOPIC = "partials"


class _Consumer:
    """The part of a consumer the rollup agent steers: assignment, pauses and seeks."""

    def __init__(self, partitions: int) -> None:
        self.assigned = {TopicPartition(TOPIC, p) for p in range(partitions)}
        self.stopped: set[TopicPartition] = set()
        self.seeks: dict[int, int] = {}

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


def test_a_partition_of_owned_shards_only_is_paused_and_read_on_after_its_own_partials() -> None:
    owned = {0, 4, 1}
    written = {0: 25, 1: 7}
    # 8 shards over 4 partitions: partition 0 carries shards 0 and 4, partition 1 shards 1 and 5.
    agent = RollupAgent(Settings(shards=8), Rollup(), owned.__contains__, written=lambda p: written.get(p, 0))
    consumer = _Consumer(4)
    agent.consumer = consumer  # type: ignore[assignment]
    agent._applied = {0: 10, 1: 3}

    agent._follow_ownership()
    assert consumer.stopped == {TopicPartition(TOPIC, 0)}
    # A checkpoint skips the echoes of a paused partition, not those of one still read.
    assert (agent._position(0), agent._position(1)) == (25, 3)

    owned.discard(4)  # shard 4 went to another worker: its partials are read on from after this worker's last
    agent._follow_ownership()
    assert consumer.stopped == set() and consumer.seeks == {0: 25} and agent._applied[0] == 25

    owned.update({4, 5})
    written[0] = 40
    agent._follow_ownership()
    assert consumer.stopped == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)}
