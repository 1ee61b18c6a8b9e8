"""History (SPEC §5) against the batch reference: at past midnights of 210-day logs, every series the pipeline
keeps equals the reference given as_of = that midnight and the accepted events up to it, including the points
that late events revised after they were captured and, with events 60 days out of order, the midnights before a
shard's first event that got points once earlier events came."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from revpulse.settings import Settings
from revpulse.streams import outputs as outputs_module
from revpulse.streams.engine import Engine
from revpulse.streams.history import BASE_OF, QUANTITIES_OF_HISTORY
from revpulse.streams.ledger import Key
from revpulse.streams.outputs import Outputs
from revpulse.streams.partition import InputRecord, Shard, ShardOutput
from revpulse.streams.pipeline import Pipeline
from revpulse.streams.rollup import Pending, Rollup
from revpulse.streams.wire import Points, parse_partial, partial_records
from tests.support.reference import RefSettings, compute
from tests.unit.test_crosscheck import assert_same, random_log

DAY_US = 86_400 * 1_000_000
LATENESS_DAYS = 3
BASE = QUANTITIES_OF_HISTORY - BASE_OF.keys()  # a point's own cells, not the overlays revising a final one


@pytest.mark.parametrize(("seed", "disorder_days", "batch", "shards"), [(3, 20, 7, 3), (4, 2, 1, 1), (9, 60, 50, 2)])
def test_points_at_past_midnights_equal_the_reference(
    seed: int, disorder_days: float, batch: int, shards: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    revised: list[int] = []
    original = Engine._revise_history

    def counting(self: Engine, event, stamp, keyed) -> None:  # type: ignore[no-untyped-def]
        revised.append(event.t)
        original(self, event, stamp, keyed)

    monkeypatch.setattr(Engine, "_revise_history", counting)
    records = random_log(seed, 3000, days=210, accounts=20, disorder_days=disorder_days)
    settings = Settings(clock="event", fx_rates={"EUR": 1.08}, allowed_lateness=LATENESS_DAYS * 86400, shards=shards)
    pipeline = Pipeline(settings)
    inputs = [InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)]
    for start in range(0, len(inputs), batch):
        pipeline.process(inputs[start : start + batch])
    points = pipeline.outputs.history()
    assert len(points) >= 200
    assert len(revised) > 50, "events arrived after the midnights they fall before were captured"
    for day, series in points[::6] + points[-2:]:
        expected = compute(
            records, RefSettings(fx_rates={"EUR": 1.08}, allowed_lateness_s=LATENESS_DAYS * 86400), as_of_us=day
        )
        assert_same({s.key: s.value for s in series}, expected.series)


def test_final_points_leave_the_shards_and_a_rollup_rebuilt_from_the_partials_topic_agrees() -> None:
    """Points older than the final horizon leave the shards' state; every other worker's rollup, and one that
    restarts, reads them from the partials topic (whole, or compacted to each key's last record), through a
    shard changing hands, and ends with the same points and live cells as the rollup fed directly."""
    records = random_log(12, 4000, days=330, accounts=25, disorder_days=40)
    settings = Settings(
        clock="event", allowed_lateness=LATENESS_DAYS * 86400, shards=2, history_days=150, fx_rates={"EUR": 1.08}
    )
    pipeline = Pipeline(settings)
    written: list[tuple[int, Key, int]] = []
    update = pipeline.rollup.update

    def recording(shard: int, partials: dict[Key, int]) -> None:
        written.extend((shard, key, value) for key, value in partials.items())
        update(shard, partials)

    pipeline.rollup.update = recording  # type: ignore[method-assign]
    inputs = [InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)]
    for start in range(0, len(inputs), 40):
        pipeline.process(inputs[start : start + 40])
        if start == 40 * 90:
            recording(1, pipeline.shards[1].all_partials())  # shard 1 changes hands
    for shard in pipeline.shards:
        finals = shard.state.engine.history_finals
        assert finals.hour > 150 * 24 and finals.cut > 0, "points became final, and some aged out"
        assert not [key for key in shard.state.engine.history.values if key[2] <= finals.hour and key[0] in BASE]
        assert not [key for key in pipeline.rollup.shard_cells(shard.id) if key[2] <= finals.hour and key[0] in BASE]
    expected = pipeline.outputs.history()
    assert len(expected) == 150
    last: dict[tuple[int, Key], int] = {}
    for index, (shard, key, _) in enumerate(written):
        last[(shard, key)] = index
    compacted = [written[index] for index in sorted(last.values())]
    for log in (written, compacted):
        rollup = Rollup()
        pending = Pending(rollup)
        for shard, key, value in log:
            pending.add(shard, key, value)
        pending.apply()
        assert Outputs(settings, rollup, Counter).history() == expected
        assert rollup.ledger.items() == pipeline.rollup.ledger.items()


def test_the_point_at_the_midnight_of_the_last_event_has_the_segments_seen() -> None:
    """The last event at midnight D exactly: the shard has not passed D, so D's point comes from its live cells,
    and its events, in no segment, still make `unknown`'s series exist there."""
    records = [
        (
            "billing.events",
            orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "type": "subscription.updated" if i else "subscription.started",
                    "occurred_at": f"2024-01-{1 + 5 * i:02d}T00:00:00Z",
                    "account_id": "a",
                    "subscription_id": "s",
                    "mrr": 100 + i,
                }
            ),
        )
        for i in range(6)
    ]
    pipeline = Pipeline(Settings(clock="event", shards=1))
    pipeline.process([InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)])
    day, series = pipeline.outputs.history()[-1]
    assert day == 1_706_227_200_000_000  # 2024-01-26T00:00Z, the last event
    assert_same({s.key: s.value for s in series}, compute(records, RefSettings(), as_of_us=day).series)


def test_the_served_history_is_computed_a_few_points_at_a_time_and_equals_the_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`/api/history` prepares its points with the event loop free between every few, so a long history does
    not hold a worker's batches for seconds; what it then answers is what computing them at once gives."""
    records = random_log(5, 1500, days=120, accounts=15, disorder_days=5)
    settings = Settings(clock="event", allowed_lateness=LATENESS_DAYS * 86400, shards=2, fx_rates={"EUR": 1.08})
    pipeline = Pipeline(settings)
    pipeline.process([InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)])
    expected = Outputs(settings, pipeline.rollup, Counter).history()
    assert len(expected) >= 100
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def serve() -> None:
        other = asyncio.create_task(other_work())
        await pipeline.outputs.prepare_history(step=8)
        other.cancel()

    asyncio.run(serve())
    assert turns >= len(expected) // 8 - 1, "the loop ran other work between every 8 points"
    computed: list[int] = []
    point_series = outputs_module.point_series
    monkeypatch.setattr(
        outputs_module,
        "point_series",
        lambda point, day, params: computed.append(day) or point_series(point, day, params),
    )
    assert pipeline.outputs.history() == expected
    assert computed == [], "every point was prepared already"


def test_a_rollup_fed_by_the_partials_records_agrees_whole_or_compacted() -> None:
    """What the shard agent writes: a record a cell, but a point's cells one record a segment, whole. Another
    worker's rollup reading those records, all of them or compacted (each key's last record, tombstones gone),
    through a change of hands and points becoming final and cut, ends with the rollup fed directly."""
    records = random_log(12, 4000, days=330, accounts=25, disorder_days=40)
    settings = Settings(
        clock="event", allowed_lateness=LATENESS_DAYS * 86400, shards=2, history_days=150, fx_rates={"EUR": 1.08}
    )
    pipeline = Pipeline(settings)
    written: list[tuple[bytes, bytes | None]] = []
    cells_sent = 0

    def publishing(shard: Shard) -> None:
        apply = shard.apply

        def applying(items: list, next_offset: int, *, whole_points: bool = False) -> ShardOutput:
            nonlocal cells_sent
            output = apply(items, next_offset, whole_points=True)
            assert output.points is not None
            written.extend(partial_records(shard.id, output.partials, output.points))
            cells_sent += len(output.partials)
            return output

        shard.apply = applying  # type: ignore[method-assign]

    for shard in pipeline.shards:
        publishing(shard)
    inputs = [InputRecord(topic, 0, offset, value, 0.0) for offset, (topic, value) in enumerate(records)]
    for start in range(0, len(inputs), 40):
        pipeline.process(inputs[start : start + 40])
        if start == 40 * 90:  # shard 1 changes hands
            points: Points = {}
            partials = pipeline.shards[1].all_partials(points)
            written.extend(partial_records(1, partials, points))
            pipeline.rollup.update(1, partials)
    assert any(shard.state.engine.history_finals.cut > 0 for shard in pipeline.shards), "points were cut"
    assert len(written) * 3 < cells_sent, "a point's cells travel together"
    expected = pipeline.outputs.history()
    last = {key: index for index, (key, _) in enumerate(written)}
    compacted = [written[index] for index in sorted(last.values()) if written[index][1] is not None]
    for log in (written, compacted):
        rollup = Rollup()
        pending = Pending(rollup)
        for key, value in log:
            pending.add_record(parse_partial(key, value, settings.shards))
        pending.apply()
        assert Outputs(settings, rollup, Counter).history() == expected
        assert rollup.ledger.items() == pipeline.rollup.ledger.items()
