"""Every metric of SPEC §4 as a pure function of plain per-segment totals.

`None` means undefined (zero denominator, mean over nothing, undefined input): such a series is absent from
Prometheus and published with a null value. Counts and sums are never None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from revpulse.streams.quantities import MOVEMENT_KINDS

STAGE_CONVERSIONS: Final = (("lead", "mql"), ("mql", "sql"), ("sql", "opportunity"), ("opportunity", "won"))
SECONDS_PER_DAY: Final = 86_400.0

Labels = tuple[tuple[str, str], ...]  # a metric's own labels (kind, from/to, stage), sorted
Value = float | None


@dataclass(frozen=True)
class Snapshot:
    """State at as_of for one segment (accounts grouped by their latest segment)."""

    mrr: float
    customers: int
    open_opportunities: int
    open_pipeline_amount: float
    leads_in_stage: dict[str, int]


@dataclass(frozen=True)
class WindowTotals:
    """Flows over one window for one segment, plus the state at its start t0."""

    days: float
    leads_created: int
    mqls: int
    sqls: int
    opportunities_created: int
    deals_won: int
    deals_lost: int
    won_amount: float
    sales_cycle_sum: float  # seconds
    sales_cycle_count: int
    time_to_close_sum: float  # seconds
    time_to_close_count: int
    movements: dict[str, float]  # kind -> Σ amount
    new_customers: int
    trial_conversions: int  # `new` movements of accounts that started a trial earlier
    renewed: int
    canceled: int
    marketing_spend: float
    signups: int
    trials_started: int
    activated: int
    active_accounts: int
    mrr_at_t0: float
    c0_customers: int
    c0_mrr_now: float  # Σ_{c∈C0} MRR_c(as_of)
    c0_mrr_retained: float  # Σ_{c∈C0} min(MRR_c(as_of), MRR_c(t0))
    c0_churned: int  # customers of C0 with a churn movement in the window


def ratio(numerator: float, denominator: float) -> Value:
    return None if denominator == 0 else numerator / denominator


def arpa(s: Snapshot) -> Value:
    return ratio(s.mrr, s.customers)


def snapshot_metrics(s: Snapshot) -> dict[tuple[str, Labels], Value]:
    leads = sum(s.leads_in_stage.values())
    out: dict[tuple[str, Labels], Value] = {
        ("mrr", ()): s.mrr,
        ("arr", ()): 12 * s.mrr,
        ("customers", ()): float(s.customers),
        ("arpa", ()): arpa(s),
        ("open_opportunities", ()): float(s.open_opportunities),
        ("open_pipeline_amount", ()): s.open_pipeline_amount,
    }
    for stage, count in s.leads_in_stage.items():
        out[("leads_in_stage", (("stage", stage),))] = float(count)
        out[("leads_in_stage_share", (("stage", stage),))] = ratio(count, leads)
    return out


def net_new_mrr(w: WindowTotals) -> float:
    m = w.movements
    return m["new"] + m["expansion"] + m["reactivation"] - m["contraction"] - m["churn"]


def customer_churn_rate(w: WindowTotals) -> Value:
    return ratio(w.c0_churned, w.c0_customers)


def gross_mrr_churn_rate(w: WindowTotals) -> Value:
    return ratio(w.movements["churn"] + w.movements["contraction"], w.mrr_at_t0)


def net_mrr_churn_rate(w: WindowTotals) -> Value:
    m = w.movements
    return ratio(m["churn"] + m["contraction"] - m["expansion"] - m["reactivation"], w.mrr_at_t0)


def mrr_growth_rate(w: WindowTotals, mrr_now: float) -> Value:
    return ratio(mrr_now - w.mrr_at_t0, w.mrr_at_t0)


def real_mrr_growth_rate(growth: Value, days: float, inflation_annual: float) -> Value:
    if growth is None:
        return None
    inflation = (1 + inflation_annual) ** (days / 365) - 1
    return (1 + growth) / (1 + inflation) - 1


def cltv(arpa_value: Value, churn_rate: Value, days: float, gross_margin: float) -> Value:
    """arpa × margin ÷ monthly churn, where the window's churn rate is scaled to 30 days."""
    if arpa_value is None or churn_rate is None:
        return None
    monthly_churn = churn_rate * 30 / days
    return ratio(arpa_value * gross_margin, monthly_churn)


def pipeline_velocity(open_opportunities: int, deal_size: Value, win: Value, cycle_seconds: Value) -> Value:
    """Money per day: open opps × avg deal size × win rate ÷ sales cycle in days."""
    if deal_size is None or win is None or cycle_seconds is None:
        return None
    return ratio(open_opportunities * deal_size * win, cycle_seconds / SECONDS_PER_DAY)


def roi(new_mrr: float, spend: float) -> Value:
    return ratio(12 * new_mrr - spend, spend)


def window_metrics(
    w: WindowTotals, s: Snapshot, *, all_segment: bool, inflation_annual: float, gross_margin: float
) -> dict[tuple[str, Labels], Value]:
    """Every windowed metric for one segment and window. Spend-based metrics of a segment need its own spend."""
    m = w.movements
    win = ratio(w.deals_won, w.deals_won + w.deals_lost)
    deal_size = ratio(w.won_amount, w.deals_won)
    cycle = ratio(w.sales_cycle_sum, w.sales_cycle_count)
    churn_rate = customer_churn_rate(w)
    growth = mrr_growth_rate(w, s.mrr)
    spend_known = all_segment or w.marketing_spend != 0
    funnel = {
        ("lead", "mql"): ratio(w.mqls, w.leads_created),
        ("mql", "sql"): ratio(w.sqls, w.mqls),
        ("sql", "opportunity"): ratio(w.opportunities_created, w.sqls),
        ("opportunity", "won"): ratio(w.deals_won, w.opportunities_created),
    }
    out: dict[tuple[str, Labels], Value] = {
        ("net_new_mrr", ()): net_new_mrr(w),
        ("new_customers", ()): float(w.new_customers),
        ("customer_churn_rate", ()): churn_rate,
        ("gross_mrr_churn_rate", ()): gross_mrr_churn_rate(w),
        ("net_mrr_churn_rate", ()): net_mrr_churn_rate(w),
        ("nrr", ()): ratio(w.c0_mrr_now, w.mrr_at_t0),
        ("grr", ()): ratio(w.c0_mrr_retained, w.mrr_at_t0),
        ("expansion_rate", ()): ratio(m["expansion"], w.mrr_at_t0),
        ("renewal_rate", ()): ratio(w.renewed, w.renewed + w.canceled),
        ("mrr_growth_rate", ()): growth,
        ("real_mrr_growth_rate", ()): real_mrr_growth_rate(growth, w.days, inflation_annual),
        ("cltv", ()): cltv(arpa(s), churn_rate, w.days, gross_margin),
        ("leads_created", ()): float(w.leads_created),
        ("mqls", ()): float(w.mqls),
        ("sqls", ()): float(w.sqls),
        ("opportunities_created", ()): float(w.opportunities_created),
        ("deals_won", ()): float(w.deals_won),
        ("deals_lost", ()): float(w.deals_lost),
        ("won_amount", ()): w.won_amount,
        ("win_rate", ()): win,
        ("win_loss_ratio", ()): ratio(w.deals_won, w.deals_lost),
        ("avg_deal_size", ()): deal_size,
        ("sales_cycle_seconds", ()): cycle,
        ("time_to_close_seconds", ()): ratio(w.time_to_close_sum, w.time_to_close_count),
        ("pipeline_velocity", ()): pipeline_velocity(s.open_opportunities, deal_size, win, cycle),
        ("marketing_spend", ()): w.marketing_spend,
        ("cost_per_lead", ()): ratio(w.marketing_spend, w.leads_created) if spend_known else None,
        ("cac", ()): ratio(w.marketing_spend, w.new_customers) if spend_known else None,
        ("roi", ()): roi(m["new"], w.marketing_spend) if spend_known else None,
        ("signups", ()): float(w.signups),
        ("trials_started", ()): float(w.trials_started),
        ("activation_rate", ()): ratio(w.activated, w.signups),
        ("active_accounts", ()): float(w.active_accounts),
        ("trial_conversion_rate", ()): ratio(w.trial_conversions, w.trials_started),
    }
    for kind in MOVEMENT_KINDS:
        out[("mrr_movement", (("kind", kind),))] = m[kind]
    for (src, dst), value in funnel.items():
        out[("stage_conversion_rate", (("from", src), ("to", dst)))] = value
    return out
