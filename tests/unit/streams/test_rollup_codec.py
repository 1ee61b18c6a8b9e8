"""The rollup checkpoint: a real rollup round-trips to the same history and live cells, and any damaged or forged
checkpoint is one `SnapshotError`, never a rollup."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from revpulse.settings import Settings
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.rollup import Rollup
from revpulse.streams.rollup_codec import decode_rollup, encode_rollup
from revpulse.streams.state_codec import SnapshotError, seal, unseal
from tests.unit.test_crosscheck import random_log

KEY = b"k" * 32
SETTINGS = Settings(clock="event", shards=2, history_days=120, allowed_lateness=3 * 86400)


@pytest.fixture(scope="module")
def fed() -> Pipeline:
    pipeline = Pipeline(SETTINGS)
    records = random_log(5, 1500, days=250, accounts=10, disorder_days=20)
    inputs = [InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)]
    for start in range(0, len(inputs), 50):
        pipeline.process(inputs[start : start + 50])
    return pipeline


def test_a_real_rollup_round_trips_to_the_same_history_and_cells(fed: Pipeline) -> None:
    rollup = fed.rollup
    assert rollup.final and rollup.cut and rollup.points, "final points, and points cut, are in what is checked"
    restored, positions = decode_rollup(encode_rollup(rollup, {0: 17, 1: 4}, KEY), 2, 2, KEY)
    assert positions == {0: 17, 1: 4}
    names = ("partials", "point_partials", "points", "watermarks", "segments_seen", "shard_segments", "final", "cut")
    for name in (*names, "captured"):
        assert getattr(restored, name) == getattr(rollup, name), name
    assert restored.ledger.items() == rollup.ledger.items()
    assert Outputs(SETTINGS, restored, Counter).history() == fed.outputs.history()


def test_amounts_beyond_64_bits_round_trip_in_points_and_in_a_shard_s_cells() -> None:
    rollup = Rollup()
    rollup.update(
        0, {("mrr_now", "all", 0): 2**70, ("h:c0_mrr_now@1d", "all", 48): -(2**80), ("h:c0_mrr_now@1d", "smb", 48): 3}
    )
    rollup.update(
        1, {("h:c0_mrr_now@1d", "all", 48): 2**64, ("h:c0_mrr_now@1d", "all", 30): 1}
    )  # 30: a cell beside the rows
    restored, _ = decode_rollup(encode_rollup(rollup, {0: 0, 1: 0}), 2, 2)
    assert restored.partials == {0: {("mrr_now", "all", 0): 2**70}, 1: {}}
    assert dict(restored.point_partials[0]) == {
        48: {("h:c0_mrr_now@1d", "all"): -(2**80), ("h:c0_mrr_now@1d", "smb"): 3}
    }
    assert dict(restored.point_partials[1]) == {
        48: {("h:c0_mrr_now@1d", "all"): 2**64},
        30: {("h:c0_mrr_now@1d", "all"): 1},
    }
    assert dict(restored.points) == {
        48: {("h:c0_mrr_now@1d", "all"): 2**64 - 2**80, ("h:c0_mrr_now@1d", "smb"): 3},
        30: {("h:c0_mrr_now@1d", "all"): 1},
    }
    assert restored.ledger.items() == {("mrr_now", "all", 0): 2**70}


def _body(fed: Pipeline) -> dict[str, Any]:
    return orjson.loads(unseal(encode_rollup(fed.rollup, {0: 1, 1: 1})))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda body: body.update(format="rollup-0"), "format"),
        (lambda body: body.pop("points"), "keys"),
        (lambda body: body["positions"].pop("1"), "each of 2 partitions"),
        (lambda body: body["positions"].update({"0": -1}), "each of 2 partitions"),
        (lambda body: body["watermarks"].update({"2": 5}), "not a shard of 2"),
        (lambda body: body["final"].update({"0": "x"}), "64-bit"),
        (lambda body: body["partials"]["0"].append(["mrr_nwo", "all", [1, 2]]), "no shard writes"),
        (lambda body: body["partials"]["0"].append(["signups", "all", [1]]), "pairs"),
        (lambda body: body["points"].append(["__reset", "", [1, 2]]), "no shard writes"),
        (lambda body: body.update(cut=1.5), "64-bit"),
        (lambda body: body.update(segments_seen=["unknown"]), "segments_seen"),
        (lambda body: body["segments_seen"].update({"2": ["unknown"]}), "not a shard of 2"),
        (lambda body: body["segments_seen"].update({"0": [7]}), "strings"),
    ],
)
def test_a_checkpoint_that_is_not_ours_is_refused(fed: Pipeline, change: Any, reason: str) -> None:
    body = _body(fed)
    change(body)
    with pytest.raises(SnapshotError, match=reason):
        decode_rollup(seal(orjson.dumps(body)), 2, 2)


def test_a_damaged_or_unsigned_checkpoint_is_refused(fed: Pipeline) -> None:
    blob = encode_rollup(fed.rollup, {0: 1, 1: 1}, KEY)
    with pytest.raises(SnapshotError):
        decode_rollup(blob[:-1], 2, 2, KEY)
    with pytest.raises(SnapshotError):
        decode_rollup(encode_rollup(fed.rollup, {0: 1, 1: 1}), 2, 2, KEY)  # a forger without the key
    with pytest.raises(SnapshotError):
        decode_rollup(seal(b"[1, 2"), 2, 2)


def test_a_checkpoint_of_the_previous_format_decodes_with_the_segments_seen_over_all_shards(fed: Pipeline) -> None:
    body = _body(fed)
    body.update(format="rollup-1", segments_seen=["other", "unknown"])
    restored, _ = decode_rollup(seal(orjson.dumps(body)), 2, 2)
    assert restored.segments_seen == {"other", "unknown"} and restored.shard_segments == {}
    assert restored.ledger.items() == fed.rollup.ledger.items()
