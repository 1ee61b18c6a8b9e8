"""Raw bad records covering the dead-letter reasons of SPEC §1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from revpulse.synth.config import TOPIC_BILLING, TOPIC_CRM, TOPIC_PRODUCT

_BAD_AT = datetime(2024, 1, 2, 12, 0, tzinfo=UTC)


def bad_record_cases(*, at: datetime = _BAD_AT) -> list[tuple[str, bytes, tuple[str | None, ...]]]:
    """Raw bad records with the outcome SPEC §1 prescribes: ``(topic, bytes, outcomes)``.

    ``outcomes`` has one entry for a single record (its dead-letter reason) and one entry per element for a JSON
    array (``None`` = a valid event, applied). The valid event is a ``lead.created`` at ``at`` for the account
    ``acc-bad-1`` (a key no generated stream uses). The unknown currency is ``XTS`` (ISO 4217's testing code),
    assumed absent from the FX rates.
    """
    ts = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def ev(event_id: str, etype: Any, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"event_id": event_id, "type": etype, "occurred_at": ts, "account_id": "acc-bad-1"}
        out.update(fields)
        return out

    def enc(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    valid = ev("bad-valid-1", "lead.created", lead_id="lead-bad-1", source="organic")
    cases: list[tuple[str, bytes, tuple[str | None, ...]]] = [
        (TOPIC_CRM, b'{"event_id": "bad-1", "type": "lead.created", "occurred_at": ', ("invalid_json",)),
        (TOPIC_BILLING, b"subscription.started acc-bad-1 99.0", ("invalid_json",)),
        (TOPIC_PRODUCT, b'"product.usage"', ("invalid_event",)),
        (TOPIC_CRM, b"42", ("invalid_event",)),
        (TOPIC_CRM, enc({k: v for k, v in ev("bad-4", "x").items() if k != "type"}), ("invalid_event",)),
        (TOPIC_CRM, enc(ev("bad-5", 17, lead_id="lead-bad-5")), ("invalid_event",)),
        (TOPIC_CRM, enc(ev("bad-6", "lead.teleported", lead_id="lead-bad-6")), ("unknown_type",)),
        (TOPIC_BILLING, enc(ev("bad-7", "invoice.paid", amount=10.0)), ("unknown_type",)),
        (
            TOPIC_CRM,
            enc(ev("bad-8", "opportunity.created", opportunity_id="opp-bad-8", amount="1200.00")),
            ("invalid_event",),
        ),
        (
            TOPIC_BILLING,
            enc(ev("bad-9", "subscription.started", subscription_id="sub-bad-9", mrr=-5)),
            ("invalid_event",),
        ),
        (
            TOPIC_CRM,
            enc({**ev("bad-10", "lead.created", lead_id="lead-bad-10"), "occurred_at": "2024-01-02 12:00:00"}),
            ("invalid_event",),
        ),
        (
            TOPIC_CRM,
            enc({**ev("bad-11", "lead.created", lead_id="lead-bad-11"), "occurred_at": "2024-01-02T12:00:00"}),
            ("invalid_event",),
        ),
        (TOPIC_CRM, enc(ev("bad-12", "lead.stage_changed", lead_id="lead-bad-12", stage="won")), ("invalid_event",)),
        (
            TOPIC_BILLING,
            enc(ev("bad-13", "subscription.started", subscription_id="sub-bad-13", amount=100, interval="fortnight")),
            ("invalid_event",),
        ),
        (TOPIC_CRM, enc(ev("bad-14", "lead.created")), ("invalid_event",)),
        (TOPIC_CRM, enc({**ev("bad-15", "lead.created", lead_id="lead-bad-15"), "account_id": ""}), ("invalid_event",)),
        (
            TOPIC_BILLING,
            enc(ev("bad-16", "subscription.started", subscription_id="sub-bad-16", mrr=99.0, currency="XTS")),
            ("unknown_currency",),
        ),
        (
            TOPIC_CRM,
            enc([valid, ev("bad-17", "opportunity.created", opportunity_id="opp-bad-17", amount="5000")]),
            (None, "invalid_event"),
        ),
    ]
    return cases


def bad_records(*, at: datetime = _BAD_AT) -> list[tuple[str, bytes]]:
    """A handful of raw bad records ``(topic, bytes)`` covering every dead-letter reason of SPEC §1 except
    ``too_late``, plus one JSON array mixing a valid event with a bad one (see :func:`bad_record_cases`)."""
    return [(topic, raw) for topic, raw, _ in bad_record_cases(at=at)]
