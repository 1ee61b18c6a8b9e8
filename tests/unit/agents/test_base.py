"""The batch agents' helpers that need no broker."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from revpulse.agents.base import BatchAgent, topic_partitions
from revpulse.settings import Settings


class _Cluster:
    def __init__(self, partitions: dict[str, set[int]]) -> None:
        self.partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.partitions.get(topic)


class _Client:
    async def fetch_all_metadata(self) -> _Cluster:
        return _Cluster({"t": {1, 0}})


class _Consumer:
    """A consumer whose own metadata has not seen the topic yet (a topic created after it started)."""

    _client: Any = _Client()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return None


def test_a_topic_the_consumer_does_not_know_yet_is_read_from_the_cluster_metadata() -> None:
    partitions = asyncio.run(topic_partitions(_Consumer(), "t"))  # type: ignore[arg-type]
    assert partitions == [TopicPartition("t", 0), TopicPartition("t", 1)]
    assert asyncio.run(topic_partitions(_Consumer(), "absent")) == []  # type: ignore[arg-type]


class _Committer:
    """Commits as aiokafka does: an empty mapping is a ValueError."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("t", 0)}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            raise ValueError(offsets)
        self.commits.append(offsets)


def test_a_commit_of_nothing_still_owned_commits_nothing() -> None:
    agent = BatchAgent(Settings(), ["t"], "group")
    agent.consumer = committer = _Committer()  # type: ignore[assignment]
    asyncio.run(agent.commit({TopicPartition("t", 1): 4}))  # taken away by a rebalance meanwhile
    asyncio.run(agent.commit({}))
    asyncio.run(agent.commit({TopicPartition("t", 0): 7, TopicPartition("t", 1): 4}))
    assert committer.commits == [{TopicPartition("t", 0): 7}]
