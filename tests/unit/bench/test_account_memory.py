"""The memory bench's clones: where they go and what they keep (`bench.account_memory.clone`)."""

from __future__ import annotations

import orjson

from bench.account_memory import SHARDS, clone
from revpulse.streams.engine import Account, Engine
from revpulse.streams.partition import shard_of


def test_clones_fill_each_shard_its_ids_route_to_without_leads_or_opportunities() -> None:
    engines = [Engine() for _ in range(SHARDS)]
    original = engines[3].accounts.add("acc-1")
    original.segment_values.append("smb")
    original.leads, original.opportunities = ("lead-1",), ("opp-1",)
    engines[3].watermark = 1_700_000_000_000_000
    assert clone(engines, 50) == (1, 1_700_000_000_000_000)
    assert sum(len(engine.accounts) for engine in engines) == 50
    for shard, engine in enumerate(engines):
        for account_id, data in engine.accounts.encoded():
            if account_id == "acc-1":
                continue
            assert shard_of(account_id, SHARDS) == shard
            assert Account.decode(bytes(data)) == Account(segment_values=["smb"])
    assert orjson.loads(original.encode())[9] == ["lead-1"]  # the original keeps its own
