"""History (SPEC §5) against the batch reference: at past midnights of 210-day logs, every series the pipeline
keeps equals the reference given as_of = that midnight and the accepted events up to it, including the points
that late events revised after they were captured and, with events 60 days out of order, the midnights before a
shard's first event that got points once earlier events came."""

from __future__ import annotations

import pytest

from revpulse.settings import Settings
from revpulse.streams.engine import Engine
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from tests.support.reference import RefSettings, compute
from tests.unit.test_crosscheck import assert_same, random_log

DAY_US = 86_400 * 1_000_000
LATENESS_DAYS = 3


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
