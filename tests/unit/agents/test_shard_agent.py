"""The shard agent's periodic snapshots, with no broker."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from revpulse.agents.base import ProducerService
from revpulse.agents.shard_agent import ShardAgent
from revpulse.agents.snapshots import SnapshotStore
from revpulse.agents.span_reader import SpanReader
from revpulse.streams.engine import EngineConfig
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import Router, Shard, ShardState
from revpulse.streams.pipeline import decoder
from revpulse.streams.rollup import Rollup
from tests.support.deployment import settings_for


def test_a_copy_that_cannot_be_forked_is_logged_and_tried_again_next_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path)
    config = EngineConfig()
    producer = ProducerService(settings)
    rollup = Rollup()
    snapshots = SnapshotStore(settings, config, producer, lambda role, reason: None)
    spans = SpanReader(settings, Router(decoder(settings), settings.shards), lambda reason: None)
    agent = ShardAgent(settings, config, producer, snapshots, rollup, Outputs(settings, rollup, dict), spans)
    agent.shards[3] = Shard(3, config)
    agent.shards[3].state.next_offset = 40  # applied since its last snapshot (none): due, size unknown

    def no_fork(states: dict[int, ShardState]) -> None:
        raise OSError(12, "Cannot allocate memory")

    snapshots.encode_aside = no_fork  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.ERROR):
        asyncio.run(agent._snapshot())

    assert "could not fork a copy to encode snapshots of shards [3]" in caplog.text
    assert agent._due().keys() == {3}
