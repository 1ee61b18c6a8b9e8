"""From the engine's ledger to the published series: every metric × segment × window at one `as_of`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from revpulse.schemas.models import LEAD_STAGES, NANOS
from revpulse.streams.ledger import FLOWS, STEPS, Ledger
from revpulse.streams.metrics import MOVEMENT_KINDS, Snapshot, Value, WindowTotals, snapshot_metrics, window_metrics
from revpulse.streams.windows import US_PER_SECOND, WINDOWS, window_days, window_start_hour

_MONEY = frozenset(
    {"won_amount", "marketing_spend", "mrr_at_t0", "c0_mrr_now", "c0_mrr_retained"}
    | {f"mv_{kind}" for kind in MOVEMENT_KINDS}
)
_DURATIONS = frozenset({"sales_cycle_sum", "time_to_close_sum"})
_WINDOWED = sorted(FLOWS | STEPS)


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
    return ["all", *configured, *(seg for seg in ("other", "unknown") if seg in segments_seen)]


def compute_series(ledger: Ledger, segments_seen: Collection[str], as_of_us: int, params: SeriesParams) -> list[Series]:
    """Every series at `as_of_us`; the ledger's old slices are folded first (as_of never goes back)."""
    starts = [window_start_hour(as_of_us, hours) for hours in WINDOWS.values()]
    ledger.advance_horizon(min(starts))
    out: list[Series] = []
    for segment in published_segments(segments_seen, params.segments):
        snapshot = Snapshot(
            mrr=ledger.snapshot("mrr_now", segment) / NANOS,
            customers=ledger.snapshot("customers_now", segment),
            open_opportunities=ledger.snapshot("open_opportunities", segment),
            open_pipeline_amount=ledger.snapshot("open_pipeline_amount", segment) / NANOS,
            leads_in_stage={stage: ledger.snapshot(f"leads_in_stage:{stage}", segment) for stage in LEAD_STAGES},
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
        amount = raw[quantity]
        if quantity in _MONEY:
            return amount / NANOS
        if quantity in _DURATIONS:
            return amount / US_PER_SECOND
        return amount

    return WindowTotals(
        days=days,
        leads_created=raw["leads_created"],
        mqls=raw["mqls"],
        sqls=raw["sqls"],
        opportunities_created=raw["opportunities_created"],
        deals_won=raw["deals_won"],
        deals_lost=raw["deals_lost"],
        won_amount=value("won_amount"),
        sales_cycle_sum=value("sales_cycle_sum"),
        sales_cycle_count=raw["sales_cycle_count"],
        time_to_close_sum=value("time_to_close_sum"),
        time_to_close_count=raw["time_to_close_count"],
        movements={kind: value(f"mv_{kind}") for kind in MOVEMENT_KINDS},
        new_customers=raw["new_customers"],
        trial_conversions=raw["trial_conversions"],
        renewed=raw["renewed"],
        canceled=raw["canceled"],
        marketing_spend=value("marketing_spend"),
        signups=raw["signups"],
        trials_started=raw["trials_started"],
        activated=raw["activated"],
        active_accounts=raw["active_accounts"],
        mrr_at_t0=value("mrr_at_t0"),
        c0_customers=raw["c0_customers"],
        c0_mrr_now=value("c0_mrr_now"),
        c0_mrr_retained=value("c0_mrr_retained"),
        c0_churned=raw["c0_churned"],
    )
