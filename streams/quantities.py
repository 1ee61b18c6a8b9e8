"""The ledger's vocabulary: every quantity the engine emits and the series read, declared once with kind and unit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from revpulse.schemas.models import LEAD_STAGES, NANOS
from revpulse.streams.windows import US_PER_SECOND


class Kind(StrEnum):
    """How a quantity's hourly slices combine (see `ledger`)."""

    FLOW = "flow"  # summed over the slices of a window
    STEP = "step"  # a function of t0: deltas at breakpoints, summed up to t0
    SNAPSHOT = "snapshot"  # the state at as_of, in slice 0


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    per: int  # ledger amounts per reported unit: the ledger keeps integers so that reverting is exact


COUNT: Final = Unit("count", 1)
MONEY: Final = Unit("money", NANOS)  # nano-units of the reporting currency
DURATION: Final = Unit("duration", US_PER_SECOND)  # microseconds


@dataclass(frozen=True, slots=True)
class Quantity:
    name: str
    kind: Kind
    unit: Unit


_declared: dict[str, Quantity] = {}


def _declare(name: str, kind: Kind, unit: Unit) -> str:
    # The constants stay plain `str`: ledger keys are built on the engine's hot path, hashed, held in
    # snapshots and written to the partials topic, all as before.
    if name in _declared:
        raise ValueError(f"ledger quantity {name!r} declared twice")
    _declared[name] = Quantity(name, kind, unit)
    return name


FLOW, STEP, SNAPSHOT = Kind.FLOW, Kind.STEP, Kind.SNAPSHOT

# SPEC §4's kinds of MRR movement; each has its own flow, `mv_<kind>`.
MOVEMENT_KINDS: Final = ("new", "expansion", "contraction", "churn", "reactivation")

# Funnel (by the segment at each event).
LEADS_CREATED: Final = _declare("leads_created", FLOW, COUNT)
MQLS: Final = _declare("mqls", FLOW, COUNT)
SQLS: Final = _declare("sqls", FLOW, COUNT)
OPPORTUNITIES_CREATED: Final = _declare("opportunities_created", FLOW, COUNT)
DEALS_WON: Final = _declare("deals_won", FLOW, COUNT)
DEALS_LOST: Final = _declare("deals_lost", FLOW, COUNT)
WON_AMOUNT: Final = _declare("won_amount", FLOW, MONEY)
SALES_CYCLE_SUM: Final = _declare("sales_cycle_sum", FLOW, DURATION)
SALES_CYCLE_COUNT: Final = _declare("sales_cycle_count", FLOW, COUNT)
TIME_TO_CLOSE_SUM: Final = _declare("time_to_close_sum", FLOW, DURATION)
TIME_TO_CLOSE_COUNT: Final = _declare("time_to_close_count", FLOW, COUNT)
# Billing.
MOVEMENT: Final[Mapping[str, str]] = MappingProxyType(
    {kind: _declare(f"mv_{kind}", FLOW, MONEY) for kind in MOVEMENT_KINDS}
)
NEW_CUSTOMERS: Final = _declare("new_customers", FLOW, COUNT)
TRIAL_CONVERSIONS: Final = _declare("trial_conversions", FLOW, COUNT)
RENEWED: Final = _declare("renewed", FLOW, COUNT)
CANCELED: Final = _declare("canceled", FLOW, COUNT)
# Marketing and product.
MARKETING_SPEND: Final = _declare("marketing_spend", FLOW, MONEY)
SIGNUPS: Final = _declare("signups", FLOW, COUNT)
TRIALS_STARTED: Final = _declare("trials_started", FLOW, COUNT)
ACTIVATED: Final = _declare("activated", FLOW, COUNT)
ACTIVE_ACCOUNTS: Final = _declare("active_accounts", FLOW, COUNT)
# State at t0 (by the account's latest segment): C0 is the customers paying at t0.
MRR_AT_T0: Final = _declare("mrr_at_t0", STEP, MONEY)
C0_CUSTOMERS: Final = _declare("c0_customers", STEP, COUNT)
C0_MRR_NOW: Final = _declare("c0_mrr_now", STEP, MONEY)
C0_MRR_RETAINED: Final = _declare("c0_mrr_retained", STEP, MONEY)
C0_CHURNED: Final = _declare("c0_churned", STEP, COUNT)
# State at as_of (by the latest segment).
MRR_NOW: Final = _declare("mrr_now", SNAPSHOT, MONEY)
CUSTOMERS_NOW: Final = _declare("customers_now", SNAPSHOT, COUNT)
OPEN_OPPORTUNITIES: Final = _declare("open_opportunities", SNAPSHOT, COUNT)
OPEN_PIPELINE_AMOUNT: Final = _declare("open_pipeline_amount", SNAPSHOT, MONEY)
LEADS_IN_STAGE: Final[Mapping[str, str]] = MappingProxyType(
    {stage: _declare(f"leads_in_stage:{stage}", SNAPSHOT, COUNT) for stage in LEAD_STAGES}
)

QUANTITIES: Final[Mapping[str, Quantity]] = MappingProxyType(_declared)
FLOWS: Final = frozenset(name for name, quantity in QUANTITIES.items() if quantity.kind is FLOW)
STEPS: Final = frozenset(name for name, quantity in QUANTITIES.items() if quantity.kind is STEP)
SNAPSHOTS: Final = frozenset(name for name, quantity in QUANTITIES.items() if quantity.kind is SNAPSHOT)
