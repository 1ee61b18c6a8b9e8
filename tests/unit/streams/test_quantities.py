"""The ledger's vocabulary: the engine emits only declared quantities, and every declared one is emitted by some
event mix and read by the series; kinds and units as the ledger and the series rely on them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from revpulse.schemas.models import NANOS
from revpulse.streams import history
from revpulse.streams import quantities as q
from revpulse.streams.ledger import Key, Ledger
from revpulse.streams.series import SeriesParams, compute_series
from revpulse.streams.windows import HOUR_US
from revpulse.streams.wire import CUT, FINAL, RESET, SEGMENT_SEEN, WATERMARK
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate
from tests.support.harness import Harness

Mix = list[tuple[str | None, dict[str, Any]]]  # (topic, or None for the event type's own; event)


def synth_mix() -> Mix:
    """A realistic business: every event type, segment changes, late deliveries and duplicates."""
    return list(generate(SynthConfig(accounts=120, days=60), events=8_000))


def lifecycle_mix() -> Mix:
    """The paths the synthetic business may leave out: a reactivation, a renewal without a price, a trial that
    converts, a lead through every stage, opportunities won (with a lead) and lost, spend without a segment."""

    def at(day: int, hour: int = 0) -> str:
        return f"2024-01-{day:02d}T{hour:02d}:00:00Z"

    acme: list[dict[str, Any]] = [
        {"type": "account.updated", "occurred_at": at(1), "segment": "smb"},
        {"type": "product.signup", "occurred_at": at(1, 1)},
        {"type": "product.trial_started", "occurred_at": at(1, 2)},
        {"type": "product.activated", "occurred_at": at(1, 3)},
        {"type": "product.usage", "occurred_at": at(2)},
        {"type": "lead.created", "occurred_at": at(1), "lead_id": "L"},
        *(
            {"type": "lead.stage_changed", "occurred_at": at(1, 1 + i), "lead_id": "L", "stage": stage}
            for i, stage in enumerate(("mql", "sql", "opportunity", "customer"))
        ),
        {"type": "lead.created", "occurred_at": at(1), "lead_id": "D"},
        {"type": "lead.stage_changed", "occurred_at": at(2), "lead_id": "D", "stage": "disqualified"},
        {"type": "opportunity.created", "occurred_at": at(2), "opportunity_id": "O", "amount": 900, "lead_id": "L"},
        {"type": "opportunity.won", "occurred_at": at(3), "opportunity_id": "O"},
        {"type": "opportunity.created", "occurred_at": at(2), "opportunity_id": "P", "amount": 50},
        {"type": "opportunity.lost", "occurred_at": at(4), "opportunity_id": "P"},
        {"type": "opportunity.created", "occurred_at": at(4), "opportunity_id": "Q", "amount": 70},
        {"type": "subscription.started", "occurred_at": at(3), "subscription_id": "a", "mrr": 100},
        {"type": "subscription.updated", "occurred_at": at(4), "subscription_id": "a", "mrr": 150},
        {"type": "subscription.renewed", "occurred_at": at(5), "subscription_id": "a"},
        {"type": "subscription.updated", "occurred_at": at(6), "subscription_id": "a", "mrr": 120},
        {"type": "subscription.canceled", "occurred_at": at(7), "subscription_id": "a"},
        {"type": "subscription.started", "occurred_at": at(9), "subscription_id": "b", "mrr": 80},
    ]
    mix: Mix = [(None, {"event_id": f"acme{i}", "account_id": "acme", **event}) for i, event in enumerate(acme)]
    spend = {"type": "marketing.spend", "occurred_at": at(2), "channel": "ads", "amount": 40}
    return [*mix, (None, {"event_id": "spend", **spend})]


MIXES: dict[str, Callable[[], Mix]] = {"synth": synth_mix, "lifecycle": lifecycle_mix}


def published(harness: Harness, mix: Mix, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The quantity of every cell the shards publish while taking `mix`, also of cells that emptied again."""
    seen: set[str] = set()
    update = harness.pipeline.rollup.update

    def spy(shard: int, partials: dict[Key, int]) -> None:
        seen.update(key[0] for key in partials)
        update(shard, partials)

    monkeypatch.setattr(harness.pipeline.rollup, "update", spy)
    for topic, event in mix:
        harness.send(event, topic=topic)
    return seen - {WATERMARK, RESET, SEGMENT_SEEN, FINAL, CUT}


class ReadLog(Ledger):
    """A ledger that notes every quantity read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def snapshot(self, quantity: str, segment: str) -> int:
        self.read.add(quantity)
        return super().snapshot(quantity, segment)

    def window_sums(self, quantity: str, segment: str, starts: Sequence[int]) -> list[int]:
        self.read.add(quantity)
        return super().window_sums(quantity, segment, starts)


@pytest.mark.parametrize("mix", MIXES)
def test_the_engine_emits_only_declared_quantities(
    mix: str, harness_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted = published(harness_factory(), MIXES[mix](), monkeypatch)
    assert emitted, "the spy saw the shards' partials"
    # History points (SPEC §5) are the same quantities at a midnight, declared once from them in `history`.
    assert sorted(emitted - q.QUANTITIES.keys() - history.QUANTITIES_OF_HISTORY) == []


def test_every_declared_quantity_is_emitted_and_read_by_the_series(
    harness_factory: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    emitted: set[str] = set()
    for make in MIXES.values():
        emitted |= published(harness_factory(), make(), monkeypatch)
    assert sorted(q.QUANTITIES.keys() - emitted) == []

    ledger = ReadLog()
    compute_series(ledger, (), 1_704_067_200 * 1_000_000, SeriesParams(segments=("smb",)))
    assert ledger.read == q.QUANTITIES.keys()


def test_one_subscription_emits_a_flow_in_its_slice_steps_from_the_next_and_snapshots(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory()
    h.send(
        {
            "event_id": "1",
            "type": "subscription.started",
            "occurred_at": "2024-01-01T05:30:00Z",
            "account_id": "acme",
            "subscription_id": "a",
            "mrr": 100,
            "segment": "smb",
        }
    )
    hour = int(datetime(2024, 1, 1, 5, tzinfo=UTC).timestamp()) * 1_000_000 // HOUR_US
    mrr = 100 * NANOS
    expected = {
        (q.MOVEMENT["new"], hour): mrr,
        (q.NEW_CUSTOMERS, hour): 1,
        (q.MRR_AT_T0, hour + 1): mrr,
        (q.C0_CUSTOMERS, hour + 1): 1,
        (q.C0_MRR_NOW, hour + 1): mrr,
        (q.C0_MRR_RETAINED, hour + 1): mrr,
        (q.MRR_NOW, 0): mrr,
        (q.CUSTOMERS_NOW, 0): 1,
    }
    assert h.pipeline.rollup.ledger.items() == {
        (quantity, segment, slice_): value
        for (quantity, slice_), value in expected.items()
        for segment in ("smb", "all")
    }


def test_kinds_are_the_ledgers_and_the_names_are_kept() -> None:
    # The names are on the wire (partials topic keys) and in shard snapshots: renaming one is a format change.
    by_kind = {kind: {name for name, quantity in q.QUANTITIES.items() if quantity.kind is kind} for kind in q.Kind}
    assert by_kind == {
        q.FLOW: {
            *("leads_created", "mqls", "sqls", "opportunities_created", "deals_won", "deals_lost", "won_amount"),
            *("sales_cycle_sum", "sales_cycle_count", "time_to_close_sum", "time_to_close_count"),
            *("mv_new", "mv_expansion", "mv_contraction", "mv_churn", "mv_reactivation"),
            *("new_customers", "trial_conversions", "renewed", "canceled"),
            *("marketing_spend", "signups", "trials_started", "activated", "active_accounts"),
        },
        q.STEP: {"mrr_at_t0", "c0_customers", "c0_mrr_now", "c0_mrr_retained", "c0_churned"},
        q.SNAPSHOT: {
            *("mrr_now", "customers_now", "open_opportunities", "open_pipeline_amount"),
            *(f"leads_in_stage:{stage}" for stage in ("lead", "mql", "sql", "opportunity", "customer", "disqualified")),
        },
    }
    assert (by_kind[q.FLOW], by_kind[q.STEP], by_kind[q.SNAPSHOT]) == (q.FLOWS, q.STEPS, q.SNAPSHOTS)


def test_units_scale_ledger_integers_to_reported_values() -> None:
    by_unit = {
        unit: {name for name, quantity in q.QUANTITIES.items() if quantity.unit == unit}
        for unit in (q.MONEY, q.DURATION)
    }
    assert by_unit[q.MONEY] == {
        *("won_amount", "mv_new", "mv_expansion", "mv_contraction", "mv_churn", "mv_reactivation"),
        *("marketing_spend", "mrr_at_t0", "c0_mrr_now", "c0_mrr_retained", "mrr_now", "open_pipeline_amount"),
    }
    assert by_unit[q.DURATION] == {"sales_cycle_sum", "time_to_close_sum"}
    assert (q.COUNT.per, q.MONEY.per, q.DURATION.per) == (1, 1_000_000_000, 1_000_000)


def test_each_constant_is_named_after_its_quantity() -> None:
    constants = {name: value for name, value in vars(q).items() if isinstance(value, str) and value in q.QUANTITIES}
    assert all(name == value.upper() for name, value in constants.items()), constants
    assert dict(q.MOVEMENT) == {kind: f"mv_{kind}" for kind in q.MOVEMENT_KINDS}
    named = set(constants.values()) | set(q.MOVEMENT.values()) | set(q.LEADS_IN_STAGE.values())
    assert named == q.QUANTITIES.keys()
