"""Metric definitions (SPEC §4) as pure functions, with values computed by hand."""

from __future__ import annotations

import pytest

from revpulse.streams.metrics import (
    Snapshot,
    WindowTotals,
    cltv,
    pipeline_velocity,
    real_mrr_growth_rate,
    snapshot_metrics,
    window_metrics,
)


def totals(**overrides: object) -> WindowTotals:
    base: dict[str, object] = dict(
        days=30.0,
        leads_created=0,
        mqls=0,
        sqls=0,
        opportunities_created=0,
        deals_won=0,
        deals_lost=0,
        won_amount=0.0,
        sales_cycle_sum=0.0,
        sales_cycle_count=0,
        time_to_close_sum=0.0,
        time_to_close_count=0,
        movements=dict.fromkeys(("new", "expansion", "contraction", "churn", "reactivation"), 0.0),
        new_customers=0,
        trial_conversions=0,
        renewed=0,
        canceled=0,
        marketing_spend=0.0,
        signups=0,
        trials_started=0,
        activated=0,
        active_accounts=0,
        mrr_at_t0=0.0,
        c0_customers=0,
        c0_mrr_now=0.0,
        c0_mrr_retained=0.0,
        c0_churned=0,
    )
    base.update(overrides)
    return WindowTotals(**base)  # type: ignore[arg-type]


def snapshot(**overrides: object) -> Snapshot:
    base: dict[str, object] = dict(
        mrr=0.0,
        customers=0,
        open_opportunities=0,
        open_pipeline_amount=0.0,
        leads_in_stage=dict.fromkeys(("lead", "mql", "sql", "opportunity", "customer", "disqualified"), 0),
    )
    base.update(overrides)
    return Snapshot(**base)  # type: ignore[arg-type]


def metrics(w: WindowTotals, s: Snapshot, *, all_segment: bool = True) -> dict[str, float | None]:
    out = window_metrics(w, s, all_segment=all_segment, inflation_annual=0.03, gross_margin=1.0)
    return {name + "".join(f"/{v}" for _, v in labels): value for (name, labels), value in out.items()}


def test_pipeline_velocity_public_example() -> None:
    # 100 open opportunities × $50,000 × 25 % ÷ 60 days.
    assert pipeline_velocity(100, 50_000.0, 0.25, 60 * 86_400.0) == pytest.approx(20_833.333333)


def test_pipeline_velocity_undefined_inputs() -> None:
    assert pipeline_velocity(100, None, 0.25, 86_400.0) is None
    assert pipeline_velocity(100, 50_000.0, 0.25, 0.0) is None


def test_sales_metrics_from_window_totals() -> None:
    w = totals(
        deals_won=25,
        deals_lost=75,
        won_amount=1_250_000.0,
        sales_cycle_sum=25 * 60 * 86_400.0,
        sales_cycle_count=25,
        opportunities_created=200,
    )
    m = metrics(w, snapshot(open_opportunities=100))
    assert m["win_rate"] == 0.25
    assert m["win_loss_ratio"] == pytest.approx(1 / 3)
    assert m["avg_deal_size"] == 50_000.0
    assert m["sales_cycle_seconds"] == 60 * 86_400.0
    assert m["pipeline_velocity"] == pytest.approx(20_833.333333)
    assert m["stage_conversion_rate/opportunity/won"] == 0.125
    assert m["time_to_close_seconds"] is None


def test_revenue_retention_rates() -> None:
    # C0: two customers at 100 and 300 (MRR at t0 400). Now: one expanded to 150, the other churned.
    w = totals(
        mrr_at_t0=400.0,
        c0_customers=2,
        c0_mrr_now=150.0,
        c0_mrr_retained=100.0,
        c0_churned=1,
        movements={"new": 80.0, "expansion": 50.0, "contraction": 0.0, "churn": 300.0, "reactivation": 0.0},
    )
    m = metrics(w, snapshot(mrr=230.0, customers=2))
    assert m["nrr"] == 150 / 400
    assert m["grr"] == 100 / 400
    assert m["customer_churn_rate"] == 0.5
    assert m["gross_mrr_churn_rate"] == 300 / 400
    assert m["net_mrr_churn_rate"] == (300 - 50) / 400
    assert m["expansion_rate"] == 50 / 400
    assert m["net_new_mrr"] == 80 + 50 - 300
    assert m["mrr_growth_rate"] == (230 - 400) / 400
    # arpa 115 ÷ (0.5 × 30 ÷ 30)
    assert m["cltv"] == 230.0


def test_undefined_when_denominator_is_zero() -> None:
    m = metrics(totals(), snapshot())
    assert m["nrr"] is None and m["win_rate"] is None and m["cltv"] is None and m["renewal_rate"] is None
    assert m["net_new_mrr"] == 0.0 and m["deals_won"] == 0.0 and m["marketing_spend"] == 0.0


def test_spend_metrics_of_a_segment_need_its_own_spend() -> None:
    w = totals(leads_created=10, new_customers=2)
    assert metrics(w, snapshot(), all_segment=False)["cost_per_lead"] is None
    assert metrics(w, snapshot(), all_segment=True)["cost_per_lead"] == 0.0
    spent = totals(
        leads_created=10,
        new_customers=2,
        marketing_spend=1000.0,
        movements={"new": 200.0, "expansion": 0.0, "contraction": 0.0, "churn": 0.0, "reactivation": 0.0},
    )
    m = metrics(spent, snapshot(), all_segment=False)
    assert (m["cost_per_lead"], m["cac"], m["roi"]) == (100.0, 500.0, (2400 - 1000) / 1000)


def test_real_growth_deflates_by_inflation_over_the_window() -> None:
    assert real_mrr_growth_rate(0.10, 365.0, 0.03) == pytest.approx(1.10 / 1.03 - 1)
    assert real_mrr_growth_rate(None, 30.0, 0.03) is None


def test_cltv_scales_churn_to_a_month() -> None:
    # 7-day churn 0.01 → monthly 0.01 × 30 / 7.
    assert cltv(100.0, 0.01, 7.0, 0.8) == pytest.approx(100 * 0.8 / (0.01 * 30 / 7))
    assert cltv(100.0, 0.0, 7.0, 1.0) is None


def test_snapshot_metrics() -> None:
    s = snapshot(
        mrr=500.0,
        customers=4,
        leads_in_stage={"lead": 3, "mql": 1, "sql": 0, "opportunity": 0, "customer": 0, "disqualified": 0},
    )
    out = {(name, labels): value for (name, labels), value in snapshot_metrics(s).items()}
    assert out[("arr", ())] == 6000.0
    assert out[("arpa", ())] == 125.0
    assert out[("leads_in_stage_share", (("stage", "lead"),))] == 0.75
    assert out[("leads_in_stage_share", (("stage", "sql"),))] == 0.0
