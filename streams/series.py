"""From the engine's ledger to the published series: every metric × segment × window at one `as_of`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, NamedTuple, Protocol

from revpulse.streams import history
from revpulse.streams import quantities as q
from revpulse.streams.metrics import Snapshot, Value, WindowTotals, snapshot_metrics, window_metrics
from revpulse.streams.windows import WINDOWS, window_days, window_start_hour

_PER: Final = {name: quantity.unit.per for name, quantity in q.QUANTITIES.items()}
_WINDOWED: Final = sorted(q.FLOWS | q.STEPS)


class Series(NamedTuple):
    # A named tuple, not a dataclass: a refresh builds a thousand of them, and tuples build several times faster.
    metric: str
    labels: tuple[tuple[str, str], ...]  # sorted by label name
    value: Value

    @property
    def key(self) -> str:
        """The canonical name, e.g. `win_rate{segment="smb",window="30d"}`: the metric topic's record key."""
        inner = ",".join(f'{name}="{value}"' for name, value in self.labels)
        return f"{self.metric}{{{inner}}}"

    def record(self, as_of: str) -> dict[str, Any]:
        return {"metric": self.metric, "labels": dict(self.labels), "value": self.value, "as_of": as_of}


@dataclass(frozen=True)
class SeriesParams:
    segments: tuple[str, ...]
    inflation_annual: float = 0.03
    gross_margin: float = 1.0


def published_segments(segments_seen: Collection[str], configured: Sequence[str]) -> list[str]:
    """`all`, each configured segment, then `other`/`unknown` once anything resolved to them."""
    return ["all", *configured, *(seg for seg in history.SEEN_SEGMENTS if seg in segments_seen)]


class Totals(Protocol):
    """What the series read: the rollup's live `Ledger`, or one history point (`history.PointView`)."""

    def advance_horizon(self, horizon: int) -> None: ...
    def snapshot(self, quantity: str, segment: str) -> int: ...
    def window_sums(self, quantity: str, segment: str, starts: Sequence[int]) -> list[int]: ...


def point_series(point: Mapping[tuple[str, str], int], day_us: int, params: SeriesParams) -> list[Series]:
    """Every series at a past midnight, from the point's cells (SPEC §5)."""
    seen = {segment for quantity, segment in point if quantity == history.SEEN}
    return compute_series(history.PointView(point), seen, day_us, params)


def compute_series(ledger: Totals, segments_seen: Collection[str], as_of_us: int, params: SeriesParams) -> list[Series]:
    """Every series at `as_of_us`; the ledger's old slices are folded first (as_of never goes back)."""
    starts = [window_start_hour(as_of_us, hours) for hours in WINDOWS.values()]
    ledger.advance_horizon(min(starts))
    out: list[Series] = []
    for segment in published_segments(segments_seen, params.segments):
        snapshot = Snapshot(
            mrr=ledger.snapshot(q.MRR_NOW, segment) / _PER[q.MRR_NOW],
            customers=ledger.snapshot(q.CUSTOMERS_NOW, segment),
            open_opportunities=ledger.snapshot(q.OPEN_OPPORTUNITIES, segment),
            open_pipeline_amount=ledger.snapshot(q.OPEN_PIPELINE_AMOUNT, segment) / _PER[q.OPEN_PIPELINE_AMOUNT],
            leads_in_stage={stage: ledger.snapshot(name, segment) for stage, name in q.LEADS_IN_STAGE.items()},
        )
        for (metric, own), value in snapshot_metrics(snapshot).items():
            out.append(Series(metric, _labels(own, segment), value))
        sums = {quantity: ledger.window_sums(quantity, segment, starts) for quantity in _WINDOWED}
        for i, (window, hours) in enumerate(WINDOWS.items()):
            totals = _window_totals({quantity: values[i] for quantity, values in sums.items()}, window_days(hours))
            values_ = window_metrics(
                totals,
                snapshot,
                all_segment=segment == "all",
                inflation_annual=params.inflation_annual,
                gross_margin=params.gross_margin,
            )
            for (metric, own), value in values_.items():
                out.append(Series(metric, _labels(own, segment, window), value))
    return out


@cache  # the same few thousand label sets on every refresh
def _labels(own: tuple[tuple[str, str], ...], segment: str, window: str | None = None) -> tuple[tuple[str, str], ...]:
    common = [("segment", segment)] if window is None else [("segment", segment), ("window", window)]
    return tuple(sorted((*own, *common)))


def _window_totals(raw: dict[str, int], days: float) -> WindowTotals:
    def value(quantity: str) -> float:
        """In the reported unit: money in currency units, durations in seconds."""
        return raw[quantity] / _PER[quantity]

    return WindowTotals(
        days=days,
        leads_created=raw[q.LEADS_CREATED],
        mqls=raw[q.MQLS],
        sqls=raw[q.SQLS],
        opportunities_created=raw[q.OPPORTUNITIES_CREATED],
        deals_won=raw[q.DEALS_WON],
        deals_lost=raw[q.DEALS_LOST],
        won_amount=value(q.WON_AMOUNT),
        sales_cycle_sum=value(q.SALES_CYCLE_SUM),
        sales_cycle_count=raw[q.SALES_CYCLE_COUNT],
        time_to_close_sum=value(q.TIME_TO_CLOSE_SUM),
        time_to_close_count=raw[q.TIME_TO_CLOSE_COUNT],
        movements={kind: value(name) for kind, name in q.MOVEMENT.items()},
        new_customers=raw[q.NEW_CUSTOMERS],
        trial_conversions=raw[q.TRIAL_CONVERSIONS],
        renewed=raw[q.RENEWED],
        canceled=raw[q.CANCELED],
        marketing_spend=value(q.MARKETING_SPEND),
        signups=raw[q.SIGNUPS],
        trials_started=raw[q.TRIALS_STARTED],
        activated=raw[q.ACTIVATED],
        active_accounts=raw[q.ACTIVE_ACCOUNTS],
        mrr_at_t0=value(q.MRR_AT_T0),
        c0_customers=raw[q.C0_CUSTOMERS],
        c0_mrr_now=value(q.C0_MRR_NOW),
        c0_mrr_retained=value(q.C0_MRR_RETAINED),
        c0_churned=raw[q.C0_CHURNED],
    )
