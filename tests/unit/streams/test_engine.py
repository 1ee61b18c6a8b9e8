"""Engine behaviour through the pipeline: movements, order independence, segments, funnel, lateness; and the
account store that keeps the state small."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import zstandard

from revpulse.schemas.models import NANOS, Event
from revpulse.settings import Settings
from revpulse.streams import engine as engine_module
from revpulse.streams.engine import Account, AccountStore, slot_size
from revpulse.streams.partition import InputRecord
from revpulse.streams.pipeline import Pipeline
from tests.support.harness import Harness
from tests.support.reference import RefSettings, compute
from tests.unit.test_crosscheck import assert_same


def sub(
    event_id: str, when: str, kind: str = "subscription.started", account: str = "acme", **fields: Any
) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "occurred_at": when, "account_id": account, **fields}


def movements(h: Harness, window: str = "30d", segment: str = "all") -> dict[str, float | None]:
    kinds = ("new", "expansion", "contraction", "churn", "reactivation")
    return {kind: h.value("mrr_movement", kind=kind, window=window, segment=segment) for kind in kinds}


def test_chartmogul_lifecycle(harness: Harness) -> None:
    h = harness
    h.send(sub("1", "2024-01-01T00:00:00Z", subscription_id="yearly", amount=2000, interval="year"))
    assert h.value("mrr_movement", kind="new", window="30d") == pytest.approx(166.67, abs=0.005)
    h.send(sub("2", "2024-01-05T00:00:00Z", subscription_id="monthly", amount=60, interval="month"))
    assert movements(h)["expansion"] == 60
    h.send(sub("3", "2024-01-10T00:00:00Z", "subscription.canceled", subscription_id="monthly"))
    assert movements(h)["contraction"] == 60
    h.send(sub("4", "2024-01-15T00:00:00Z", "subscription.canceled", subscription_id="yearly"))
    assert movements(h)["churn"] == pytest.approx(166.67, abs=0.005)
    assert h.value("mrr") == 0 and h.value("customers") == 0 and h.value("arpa") is None
    h.send(sub("5", "2024-01-20T00:00:00Z", subscription_id="yearly2", amount=2000, interval="year"))
    m = movements(h)
    assert m["reactivation"] == pytest.approx(166.67, abs=0.005) and m["new"] == pytest.approx(166.67, abs=0.005)
    assert h.value("new_customers", window="30d") == 1
    assert h.value("net_new_mrr", window="30d") == pytest.approx(
        166.666666667 + 60 - 60 - 166.666666667 + 166.666666667
    )


def test_late_billing_event_reclassifies_the_later_movement(harness_factory: Any) -> None:
    in_order, late = harness_factory(), harness_factory()
    first = sub("1", "2024-01-01T00:00:00Z", subscription_id="a", mrr=100)
    middle = sub("2", "2024-01-02T00:00:00Z", "subscription.canceled", subscription_id="a")
    last = sub("3", "2024-01-03T00:00:00Z", subscription_id="b", mrr=150)
    in_order.send(first, middle, last)
    late.send(first, last, middle)  # the cancel lands between: `b` becomes a reactivation, not an expansion
    assert movements(late) == movements(in_order)
    assert movements(late) == {"new": 100, "expansion": 0, "contraction": 0, "churn": 100, "reactivation": 150}
    assert late.values() == in_order.values()


def test_half_cent_equality_and_floor(harness: Harness) -> None:
    h = harness
    h.send(sub("1", "2024-01-01T00:00:00Z", subscription_id="a", mrr=100))
    h.send(sub("2", "2024-01-01T01:00:00Z", "subscription.updated", subscription_id="a", mrr=100.004))
    assert movements(h)["expansion"] == 0
    h.send(sub("3", "2024-01-01T02:00:00Z", "subscription.updated", subscription_id="a", mrr=0.004))
    assert movements(h)["churn"] == 100 and h.value("customers") == 0


def test_segment_learned_late_moves_earlier_flows(harness: Harness) -> None:
    h = harness
    h.send({"event_id": "s", "type": "product.signup", "occurred_at": "2024-01-02T00:00:00Z", "account_id": "x"})
    assert h.value("signups", window="1d", segment="smb") == 0
    assert h.value("signups", window="1d", segment="unknown") == 1
    h.send(
        {
            "event_id": "u",
            "type": "account.updated",
            "occurred_at": "2024-01-01T00:00:00Z",
            "account_id": "x",
            "segment": "smb",
        }
    )
    assert h.value("signups", window="1d", segment="smb") == 1
    # the unknown series, once it existed, stays (with nothing in it)
    assert h.value("signups", window="1d", segment="unknown") == 0


def test_flows_use_event_segment_state_uses_latest(harness: Harness) -> None:
    h = harness
    h.send(sub("1", "2024-01-01T00:00:00Z", subscription_id="a", mrr=100, segment="smb"))
    h.send(
        {
            "event_id": "u",
            "type": "account.updated",
            "occurred_at": "2024-01-05T00:00:00Z",
            "account_id": "acme",
            "segment": "enterprise",
        }
    )
    assert h.value("mrr_movement", kind="new", window="30d", segment="smb") == 100
    assert h.value("mrr", segment="smb") == 0
    assert h.value("mrr", segment="enterprise") == 100


def test_too_late_duplicates_and_watermark(harness: Harness) -> None:
    h = harness
    h.send(sub("1", "2024-01-10T00:00:00Z", subscription_id="a", mrr=100))
    h.send(sub("2", "2024-01-03T00:00:00Z", subscription_id="b", mrr=50))  # exactly 7 days: accepted
    h.send(sub("3", "2024-01-02T23:59:59Z", subscription_id="c", mrr=50))  # too late
    h.send(sub("1", "2024-01-11T00:00:00Z", subscription_id="z", mrr=999))  # duplicate id
    h.send(sub("4", "2024-01-01T00:00:00Z", account="other", subscription_id="d", mrr=10))  # other key: fine
    assert h.value("mrr") == 160
    assert [letter.reason for letter in h.dead] == ["too_late"]
    assert h.pipeline.as_of_text == "2024-01-10T00:00:00Z"


def test_win_uses_last_known_amount_and_cycle_times(harness: Harness) -> None:
    h = harness
    crm = [
        {"type": "lead.created", "occurred_at": "2024-01-01T00:00:00Z", "lead_id": "L"},
        {
            "type": "opportunity.created",
            "occurred_at": "2024-01-03T00:00:00Z",
            "opportunity_id": "O",
            "amount": 1000,
            "lead_id": "L",
        },
        {"type": "opportunity.won", "occurred_at": "2024-01-05T00:00:00Z", "opportunity_id": "O"},
        {"type": "opportunity.won", "occurred_at": "2024-01-05T00:00:00Z", "opportunity_id": "never-created"},
        {"type": "opportunity.created", "occurred_at": "2024-01-04T00:00:00Z", "opportunity_id": "P", "amount": 7},
    ]
    for i, event in enumerate(crm):
        h.send({"event_id": f"c{i}", "account_id": "acme", **event})
    assert h.value("deals_won", window="7d") == 2
    assert h.value("won_amount", window="7d") == 1000
    assert h.value("sales_cycle_seconds", window="7d") == 2 * 86_400
    assert h.value("time_to_close_seconds", window="7d") == 4 * 86_400
    assert (h.value("open_opportunities"), h.value("open_pipeline_amount")) == (1, 7)
    assert h.value("leads_in_stage", stage="lead") == 1


def test_bad_array_element_is_dead_lettered_and_the_rest_applied(harness: Harness) -> None:
    h = harness
    good = b'{"event_id":"g","type":"product.signup","occurred_at":"2024-01-01T00:00:00Z","account_id":"a"}'
    bad = b'{"event_id":"b","type":"product.signup","occurred_at":"yesterday","account_id":"a"}'
    h.send_raw(b"[" + good + b"," + bad + b"]", "product.events")
    h.send_raw(b"{not json", "product.events")
    assert h.value("signups", window="1d") == 1
    assert [(d.reason, d.offset) for d in h.dead] == [("invalid_event", 0), ("invalid_json", 1)]
    assert h.dead[1].payload == b"{not json"
    assert h.dead[0].payload.startswith(b'{"event_id":"b"')


def test_an_encoded_account_decodes_to_an_equal_one() -> None:
    event = Event("e1", "subscription.started", 7_200_000_000, "acc", "smb", "s1", 49 * NANOS)
    account = Account(
        ids={"billing.events": {"e1": 7_200_000_000}, "product.events": {"e2": 3}},
        latest={"billing.events": 7_200_000_000, "product.events": 3},
        kept={"billing.events": 1},
        segment_stamps=[(7_200_000_000, 1)],
        segment_values=["smb"],
        billing=[(7_200_000_000, 1, event)],
        first_trial=(5, 2),
        product=[(3, 2, "product.trial_started")],
        last_active={"smb": 0, "all": 0},
        leads=("l1",),
        opportunities=("o1", "o2"),
        billing_base=({"s0": 10 * NANOS}, 10 * NANOS, True, 1_900, 1_950, 10 * NANOS),
    )
    assert Account.decode(account.encode()) == account
    assert len(account.encode()) < 600
    # Data only (JSON), so that a snapshot can hold it as it is; on one line, which a snapshot's layout needs.
    assert isinstance(orjson.loads(account.encode()), list) and b"\n" not in account.encode()


def test_an_account_with_money_beyond_64_bits_decodes_to_an_equal_one() -> None:
    event = Event("e1", "subscription.started", 7_200_000_000, "acc", "smb", "s1", 10**21)
    account = Account(billing=[(7_200_000_000, 1, event)], billing_base=({"s0": 2**70}, 2**70, True, None, 1, 2**64))
    assert Account.decode(account.encode()) == account


def test_the_store_encodes_the_least_recently_used_beyond_its_limit() -> None:
    store = AccountStore(hot_limit=2)
    for account_id in ("a", "b", "c"):
        store.add(account_id).segment_values.append(account_id)
    assert store.get("a") is not None  # used again: now the most recent
    store.evict(lateness_us=10)
    assert (list(store.hot), list(store)) == (["c", "a"], ["c", "a", "b"])
    b = store.get("b")
    assert b is not None and b.segment_values == ["b"] and list(store.hot) == ["c", "a", "b"]
    assert (len(store), sorted(store)) == (3, ["a", "b", "c"])


def _slot(account: Account) -> int:
    """The arena slot an account's encoding takes, compressed as the store compresses it."""
    return slot_size(len(zstandard.ZstdCompressor(level=3).compress(account.encode())))


def test_encoded_accounts_lie_compressed_in_slots_of_one_arena_that_churn_reuses() -> None:
    store = AccountStore(hot_limit=0)
    for i in range(100):
        store.add(f"a{i}").segment_values.append("x" * 2_500)
    store.evict(lateness_us=0)
    slot = _slot(Account(segment_values=["x" * 2_500]))
    assert slot < 100 and store.arena_bytes == 100 * slot  # 2,548 bytes encoded, compressed to one small slot
    # Taken out, changed, encoded again: each takes a slot another left, and the arena does not grow.
    for i in range(50):
        account = store.get(f"a{i}")
        assert account is not None
        account.segment_values[0] = "y" * 2_510
    assert _slot(Account(segment_values=["y" * 2_510])) == slot
    store.evict(lateness_us=0)
    assert store.arena_bytes == 100 * slot and len(store) == 100
    # While a forked copy reads the arena, no freed slot is written: the encoding goes to the end.
    store.holds = 1
    held = store.get("a60")
    assert held is not None
    store.evict(lateness_us=0)
    assert store.arena_bytes == 101 * slot
    store.holds = 0
    # One that outgrows its size takes a new slot at the end; its old one is free for the next.
    grown = store.get("a0")
    assert grown is not None
    grown.segment_values = [f"{i * 7919 % 10007:05d}" for i in range(600)]
    store.evict(lateness_us=0)
    assert store.arena_bytes == 101 * slot + _slot(grown) > 102 * slot
    values = {i: bytes(data) for i, data in store.encoded()}
    assert values["a0"] == grown.encode() and values["a1"] == Account(segment_values=["y" * 2_510]).encode()
    cold = [(i, data) for i, data in store.cold_encoded()]
    assert store.cold_line_bytes == sum(len(orjson.dumps(i)) + len(data) + 2 for i, data in cold)
    assert values["a99"] == Account(segment_values=["x" * 2_500]).encode()


def test_slots_waste_at_most_an_eighth() -> None:
    assert [slot_size(n) for n in (0, 1, 16, 17, 100, 128, 129, 2_048, 2_049, 10**6)] == [
        0,
        16,
        16,
        32,
        112,
        128,
        144,
        2_048,
        2_304,
        1_048_576,
    ]
    assert all(slot_size(n) - n <= max(16, n // 8) for n in range(1, 100_000, 7))


def test_an_account_leaves_the_ids_past_the_lateness_bound_when_it_is_encoded() -> None:
    store = AccountStore(hot_limit=0)
    account = store.add("a")
    recent = {f"n{i}": 100 for i in range(15)}
    account.ids = {"crm": {"old": 89, "edge": 90, **recent}, "product": {"p": 5, "q": -50}}
    account.latest = {"crm": 100, "product": 5}
    small = store.add("b")
    small.ids, small.latest = {"product": {"p": 5, "q": -50}}, {"product": 5}
    store.evict(lateness_us=10)
    kept, few = store.get("a"), store.get("b")
    # crm holds more than 16 ids: the account's are filtered; b's few are kept (`accept` checks their times)
    assert kept is not None and kept.ids == {"crm": {"edge": 90, **recent}, "product": {"p": 5}}
    assert few is not None and few.ids == {"product": {"p": 5, "q": -50}}
    assert account.ids["crm"]["old"] == 89  # the object itself is left as it was


def count_calls(monkeypatch: pytest.MonkeyPatch, *names: str) -> Counter[str]:
    """Calls of the engine's contribution functions `names`, counted as the engine makes them."""
    calls: Counter[str] = Counter()
    for name in names:
        original = getattr(engine_module, name)

        def counted(*args: Any, _original: Any = original, _name: str = name) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(engine_module, name, counted)
    return calls


def test_a_noisy_entity_is_recomputed_once_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many events of one subscription, one opportunity and one account's segment in one batch: each entity's
    contribution is computed once for the batch's start (when the entity holds none) and once at its end."""
    calls = count_calls(monkeypatch, "billing_contribution", "opportunity_contribution", "product_contribution")
    at = datetime(2024, 3, 1, 1, tzinfo=UTC)  # no midnight passed: a history point flushes the batch
    docs: list[dict[str, Any]] = [
        {"type": "subscription.started", "subscription_id": "s", "mrr": 100},
        {"type": "opportunity.created", "opportunity_id": "o", "amount": 1000},
        {"type": "product.usage"},
    ]
    docs += [{"type": "subscription.updated", "subscription_id": "s", "mrr": 100 + i} for i in range(50)]
    docs += [{"type": "opportunity.won", "opportunity_id": "o"} for _ in range(50)]
    docs += [{"type": "account.updated", "segment": ("smb", "enterprise")[i % 2]} for i in range(50)]
    records = [
        InputRecord(
            "crm.events",
            0,
            i,
            orjson.dumps(
                {"event_id": f"e{i}", "occurred_at": (at + timedelta(minutes=i)).isoformat(), "account_id": "a", **doc}
            ),
            0.0,
        )
        for i, doc in enumerate(docs)
    ]
    pipeline = Pipeline(Settings(clock="event", shards=1))

    pipeline.process(records)

    # The opportunity and the product recompute before the batch too (a new entity, and product holding no
    # contribution); the account's billing was empty before it.
    assert calls == {"billing_contribution": 1, "opportunity_contribution": 2, "product_contribution": 2}
    harness = Harness(Settings(clock="event", shards=1))
    for record in records:
        harness.send_raw(record.value or b"", record.topic)
    assert {s.key: s.value for s in pipeline.refresh()} == harness.values()


def at(day: float) -> str:
    return (datetime(2024, 1, 1, tzinfo=UTC) + timedelta(days=day)).isoformat()


def test_a_duplicate_is_one_of_the_same_topic_and_key_and_only_while_remembered(harness: Harness) -> None:
    """SPEC §2 (revised): ids per (input topic, routing key), remembered while within the allowed lateness (7 d)
    of the key's latest occurred_at on that topic."""
    signup = {"type": "product.signup", "account_id": "a"}
    harness.send({"event_id": "x", "occurred_at": at(0), **signup})
    harness.send({"event_id": "x", "occurred_at": at(0), **signup})  # a re-delivery: duplicate
    harness.send({"event_id": "x", "occurred_at": at(0), **signup}, topic="crm.events")  # another topic: new
    harness.send({"event_id": "x", "occurred_at": at(0), **signup, "account_id": "b"})  # another key: new
    harness.send({"event_id": "later", "occurred_at": at(7), **signup})  # x at the bound: still remembered
    harness.send({"event_id": "x", "occurred_at": at(7), **signup})  # duplicate
    harness.send({"event_id": "latest", "occurred_at": at(7.5), **signup})  # x is now past the bound
    harness.send({"event_id": "x", "occurred_at": at(7.5), **signup})  # reusing a forgotten id: a new event
    harness.send({"event_id": "x", "occurred_at": at(0), **signup})  # the first x again: too late
    outcomes = harness.pipeline.outcomes()
    assert outcomes[("product.events", "product.signup", "accepted")] == 5
    assert outcomes[("crm.events", "product.signup", "accepted")] == 1
    assert outcomes[("product.events", "product.signup", "duplicate")] == 2
    assert outcomes[("product.events", "product.signup", "late")] == 1
    assert harness.value("signups", window="30d") == 6


def test_ids_of_a_key_are_forgotten_as_its_latest_moves_on() -> None:
    pipeline_harness = Harness(Settings(clock="event", shards=1))
    for i in range(2_000):  # one usage an hour: 168 of them within the 7 days of lateness
        pipeline_harness.send(
            {"event_id": f"u{i}", "type": "product.usage", "occurred_at": at(i / 24), "account_id": "a"}
        )
    engine = pipeline_harness.pipeline.shards[0].state.engine
    account = engine.accounts.get("a")
    assert account is not None
    ids = account.ids["product.events"]
    assert 169 <= len(ids) <= 2 * 169  # the last 7 days (and one hour) of ids, at most doubled before a pass


def test_an_event_later_than_all_of_its_entity_is_applied_without_a_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """One record a batch, each event later than every other of its subscription, lead or opportunity: after
    the first, none replays its entity's history (the cost of an event does not grow with it)."""
    calls = count_calls(monkeypatch, "billing_contribution", "opportunity_contribution", "lead_contribution")
    at = datetime(2024, 3, 1, tzinfo=UTC)
    docs: list[dict[str, Any]] = [
        {"type": "subscription.started", "subscription_id": "s", "mrr": 100},
        {"type": "opportunity.created", "opportunity_id": "o", "amount": 1000},
        {"type": "lead.created", "lead_id": "l"},
    ]
    for i in range(100):
        docs += [
            {"type": "subscription.updated", "subscription_id": "s", "mrr": 100 + i % 7},
            {"type": "subscription.renewed", "subscription_id": "s"},
            {"type": "opportunity.won", "opportunity_id": "o", "amount": 1000 + i},
            {"type": "lead.stage_changed", "lead_id": "l", "stage": ("mql", "sql", "lead")[i % 3]},
        ]
    harness = Harness(Settings(clock="event", shards=1))
    for i, doc in enumerate(docs):
        when = (at + timedelta(minutes=17 * i)).isoformat()
        harness.send({"event_id": f"e{i}", "occurred_at": when, "account_id": "a", **doc})

    # One computation for the state before each entity's first event, one after it; then appends only.
    assert calls == {"billing_contribution": 1, "opportunity_contribution": 2, "lead_contribution": 2}
    batched = Pipeline(Settings(clock="event", shards=1))
    batched.process(
        [
            InputRecord(
                "crm.events",
                0,
                i,
                orjson.dumps(
                    {
                        "event_id": f"e{i}",
                        "occurred_at": (at + timedelta(minutes=17 * i)).isoformat(),
                        "account_id": "a",
                        **doc,
                    }
                ),
                0.0,
            )
            for i, doc in enumerate(docs)
        ]
    )
    assert harness.values() == {s.key: s.value for s in batched.refresh()}
    assert harness.value("deals_won", window="30d") == 100
    assert harness.value("mrr") == 100 + 99 % 7


def test_what_an_account_applied_for_its_forgotten_billing_stays_one_cell_a_quantity() -> None:
    """Two years of repricing, one event a batch (the incremental path, which moves the contribution the account
    keeps instead of replaying its billing): the kept contribution holds, before the slice its forgotten billing
    ends in, one cell per quantity and segment, not one per event. Then a billing event out of order replays the
    account from that contribution, and a CRM event a year late moves its segment: the series, and the history's
    last points, still equal the reference's."""
    lateness = 3 * 86_400
    settings = Settings(clock="event", shards=1, allowed_lateness=lateness)
    start = datetime(2024, 1, 1, 9, tzinfo=UTC)
    docs: list[tuple[datetime, dict[str, Any]]] = [(start, {"type": "subscription.started", "mrr": 100})]
    for i in range(1, 48):
        kind = "subscription.renewed" if i % 2 else "subscription.updated"
        docs.append((start + timedelta(days=15 * i), {"type": kind, "mrr": 100 + 7 * (i % 5)}))
    records: list[tuple[str, bytes]] = []
    harness = Harness(settings)

    def send(when: datetime, doc: dict[str, Any], topic: str) -> None:
        value = orjson.dumps(
            {"event_id": f"e{len(records)}", "occurred_at": when.isoformat(), "account_id": "a", **doc}
        )
        records.append((topic, value))
        harness.send_raw(value, topic)

    for when, doc in docs:
        send(when, {"subscription_id": "s", **doc}, "billing.events")
    engine = harness.pipeline.shards[0].state.engine
    account = engine.accounts.get("a")
    assert account is not None and account.billing_base is not None and account.applied is not None
    base_hour = account.billing_base[4]
    old = Counter((quantity, segment) for quantity, segment, hour in account.applied if 0 < hour <= base_hour)
    assert old and max(old.values()) == 1
    reference = RefSettings(allowed_lateness_s=lateness)
    assert_same(harness.values(), compute(records, reference).series)

    last = docs[-1][0]
    repriced = {"type": "subscription.updated", "subscription_id": "s", "mrr": 90}
    send(last - timedelta(days=2), repriced, "billing.events")
    send(last - timedelta(days=365), {"type": "lead.created", "lead_id": "l", "segment": "enterprise"}, "crm.events")
    assert_same(harness.values(), compute(records, reference).series)
    for day, series in harness.pipeline.outputs.history()[-3:]:
        assert_same({s.key: s.value for s in series}, compute(records, reference, as_of_us=day).series)
