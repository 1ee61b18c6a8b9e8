"""The snapshot format: a real shard state round-trips exactly, and any damaged, forged or malformed snapshot is one
`SnapshotError`, never another exception, never a state."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import orjson
import pytest

from revpulse.schemas.models import NANOS, Event
from revpulse.settings import Settings
from revpulse.streams.engine import ACCOUNT_RECORD, Account, Engine, EngineConfig
from revpulse.streams.partition import InputRecord, Shard, ShardState
from revpulse.streams.pipeline import Pipeline, engine_config
from revpulse.streams.state_codec import (
    ENGINE_ELSEWHERE,
    ENGINE_FIELDS,
    FORMAT,
    SnapshotError,
    decode_state,
    encode_state,
    seal,
    unseal,
)
from revpulse.synth.config import SynthConfig
from revpulse.synth.delivery import generate

KEY = b"k" * 32
SETTINGS = Settings(clock="event", fx_rates={"EUR": 1.08}, shards=2, hot_accounts=5)
CONFIG = engine_config(SETTINGS)


def _records() -> list[InputRecord]:
    # 300 days: events older than every window (and the history) get folded: billing bases, folded cells too.
    events = generate(SynthConfig(accounts=40, days=300), events=8_000)
    return [InputRecord(topic, 0, i, orjson.dumps(event), 0.0) for i, (topic, event) in enumerate(events)]


RECORDS = _records()
SPLIT = len(RECORDS) * 2 // 3


def _process(pipeline: Pipeline, records: list[InputRecord]) -> None:
    for i in range(0, len(records), 500):
        pipeline.process(records[i : i + 500])


def _values(pipeline: Pipeline) -> dict[str, float | None]:
    return {series.key: series.value for series in pipeline.refresh()}


@pytest.fixture(scope="module")
def fed() -> Pipeline:
    pipeline = Pipeline(SETTINGS)
    _process(pipeline, RECORDS[:SPLIT])
    return pipeline


def test_the_fed_state_covers_what_a_snapshot_holds(fed: Pipeline) -> None:
    engines = [shard.state.engine for shard in fed.shards]
    stores = [engine.accounts for engine in engines]
    accounts = [Account.decode(bytes(data)) for store in stores for i, data in store.encoded() if i not in store.hot]
    assert all(store.hot and len(store) > len(store.hot) for store in stores)
    assert any(account.billing_base is not None for account in accounts)
    assert any(account.first_trial is not None for account in accounts)
    assert any(engine.folded_at is not None and engine.leads and engine.opportunities for engine in engines)
    assert any(engine.lead_opportunities and engine.channels for engine in engines)
    assert all(engine.history_finals.shapes and engine.history_finals.hour for engine in engines)


def test_a_real_state_round_trips_exactly_and_goes_on_to_the_same_metrics(fed: Pipeline) -> None:
    restored = Pipeline(SETTINGS)
    for shard in fed.shards:
        blob = encode_state(shard.state, shard.id, KEY)
        state = decode_state(blob, shard.id, CONFIG, KEY)
        assert encode_state(state, shard.id, KEY) == blob  # every attribute, every account, in the same order
        assert state.engine.ledger.items() == shard.state.engine.ledger.items()
        assert (state.applied, state.outcomes, state.next_offset) == (
            shard.state.applied,
            shard.state.outcomes,
            shard.state.next_offset,
        )
        restored.shards[shard.id] = Shard(shard.id, CONFIG, state)
        restored.rollup.update(shard.id, restored.shards[shard.id].all_partials())
    assert _values(restored) == _values(fed)

    whole = Pipeline(SETTINGS)
    _process(whole, RECORDS)
    _process(restored, RECORDS[SPLIT:])
    for before, after in zip(whole.shards, restored.shards, strict=True):
        assert after.state.engine.ledger.items() == before.state.engine.ledger.items()
        assert after.state.outcomes == before.state.outcomes
    assert _values(restored) == _values(whole)


def _huge_state() -> ShardState:
    """Integers beyond 64 bits wherever the state may hold them, and a quantity no ledger declares."""
    engine = Engine(EngineConfig(hot_accounts=1))
    engine.ledger.add(("h:mrr_now", "all", 2**70), 10**40)
    engine.ledger.add(("mrr_now", "smb", 0), -(10**30))
    engine.ledger.add(("signups", "all", -5), 3)
    big = Event("e1", "subscription.started", 3_600_000_000, "a1", "smb", "s1", 10**25)
    for account_id in ("a1", "a2"):
        account = engine.accounts.add(account_id)
        account.billing.append((3_600_000_000, 1, big))
        account.billing_base = ({"s0": 2**64 + 1}, 2**64 + 1, True, None, 5, -(2**65))
    engine.accounts.evict(lateness_us=0)  # one held encoded, one as an object
    engine.watermark, engine.sequence = 3_600_000_000, 1
    return ShardState(engine, {("billing.events", 0): (7, 0)}, {}, 8)


def test_integers_beyond_64_bits_come_back_exact() -> None:
    state = _huge_state()
    restored = decode_state(encode_state(state, 0), 0, EngineConfig())
    assert restored.engine.ledger.items() == state.engine.ledger.items()
    for account_id in ("a1", "a2"):
        account = restored.engine.accounts.get(account_id)
        assert account is not None and account == state.engine.accounts.get(account_id)
        assert account.billing[0][2].money == 10**25


def test_money_beyond_64_bits_through_the_engine_round_trips() -> None:
    """An amount of 10¹¹ is 10²⁰ nanos: more than orjson's integers, as an event's money and in cells."""
    pipeline = Pipeline(Settings(clock="event", shards=1, hot_accounts=0))
    event = {"event_id": "x", "type": "subscription.started", "occurred_at": "2024-01-01T00:00:00Z"}
    event |= {"account_id": "a", "subscription_id": "s", "mrr": 10**11}
    pipeline.process([InputRecord("billing.events", 0, 0, orjson.dumps(event), 0.0)])
    state = pipeline.shards[0].state
    assert max(state.engine.ledger.items().values()) > 2**64
    restored = decode_state(encode_state(state, 0), 0, EngineConfig())
    assert restored.engine.ledger.items() == state.engine.ledger.items()
    assert restored.engine.accounts.get("a") == state.engine.accounts.get("a")


def test_every_engine_attribute_is_in_a_snapshot_or_said_not_to_be() -> None:
    unlisted = vars(Engine()).keys() - ENGINE_FIELDS.keys() - ENGINE_ELSEWHERE
    assert not unlisted, f"add {sorted(unlisted)} to ENGINE_FIELDS in streams/state_codec.py (or ENGINE_ELSEWHERE)"
    engine = Engine()
    engine.new_attribute = 1  # type: ignore[attr-defined]
    with pytest.raises(SnapshotError, match="new_attribute"):
        encode_state(ShardState(engine), 0)


def test_every_field_of_an_account_is_in_its_encoding() -> None:
    """An account held encoded, or in a snapshot, is its record: a field of `Account` (but the caches, which
    compare=False leaves out) that the record lacks is lost at the next eviction. A new field goes in
    `Account.encode`/`decode`, `ACCOUNT_RECORD` and `state_codec.check_account`."""
    kept = [field.name for field in fields(Account) if field.compare]
    assert len(kept) == ACCOUNT_RECORD, f"Account has {len(kept)} fields to keep, its record {ACCOUNT_RECORD}"


# -- damaged and forged snapshots -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small() -> bytes:
    """A small real snapshot (shard 0, unsigned)."""
    return encode_state(_small_state(), 0)


def _small_state() -> ShardState:
    pipeline = Pipeline(Settings(clock="event", fx_rates={"EUR": 1.08}, shards=1, hot_accounts=3))
    _process(pipeline, RECORDS[:400])
    return pipeline.shards[0].state


def _decodes(blob: bytes, key: bytes | None = None, shard: int = 0) -> ShardState:
    return decode_state(blob, shard, EngineConfig(), key)


def test_a_small_snapshot_reads_back(small: bytes) -> None:
    state = _small_state()
    restored = _decodes(small)
    assert restored.engine.ledger.items() == state.engine.ledger.items() != {}
    assert (restored.next_offset, len(restored.engine.accounts)) == (state.next_offset, len(state.engine.accounts))


def test_every_truncation_is_refused(small: bytes) -> None:
    for length in [*range(0, 64), *range(64, len(small), max(1, len(small) // 200)), len(small) - 1]:
        with pytest.raises(SnapshotError):
            _decodes(small[:length])
    with pytest.raises(SnapshotError, match="announces"):
        _decodes(small + b"\0")


def test_every_flipped_bit_is_refused(small: bytes) -> None:
    positions = [*range(0, 48), *range(48, len(small), max(1, len(small) // 300)), *range(len(small) - 32, len(small))]
    for position in positions:
        for bit in (0, 7):
            damaged = bytearray(small)
            damaged[position] ^= 1 << bit
            with pytest.raises(SnapshotError):
                _decodes(bytes(damaged))


def test_a_checksum_that_does_not_match_says_damaged(small: bytes) -> None:
    damaged = bytearray(small)
    damaged[20] ^= 1
    with pytest.raises(SnapshotError, match="checksum does not match"):
        _decodes(bytes(damaged))


def test_signatures(small: bytes) -> None:
    state = _small_state()
    signed = encode_state(state, 0, KEY)
    assert _decodes(signed, KEY).engine.ledger.items() == state.engine.ledger.items()
    with pytest.raises(SnapshotError, match="another key"):
        _decodes(signed, b"x" * 32)
    with pytest.raises(SnapshotError, match="this worker has none"):
        _decodes(signed)
    with pytest.raises(SnapshotError, match="not signed"):
        _decodes(small, KEY)  # an unsigned snapshot could be anybody's
    forged = bytearray(signed)
    forged[-40] ^= 1  # the body's last bytes, a signature unchanged
    with pytest.raises(SnapshotError, match="signature does not match"):
        _decodes(bytes(forged), KEY)
    # Re-sealed as a checksum only: still not read by a worker with a key.
    with pytest.raises(SnapshotError, match="not signed"):
        _decodes(seal(unseal(signed, KEY)), KEY)


def _header(blob: bytes, **changes: int) -> bytes:
    magic, version, sealing, reserved, length = struct.unpack_from(">4sHBBQ", blob)
    fields = {"version": version, "sealing": sealing, "reserved": reserved, "length": length} | changes
    return struct.pack(">4sHBBQ", magic, *fields.values()) + blob[16:]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"version": FORMAT + 1}, "format 3"),
        ({"version": 1}, "format 1"),
        ({"sealing": 7}, "unknown seal"),
        ({"reserved": 1}, "unknown seal"),
        ({"length": 2**64 - 1}, "announces"),
        ({"length": 2**40}, "announces"),
        ({"length": 0}, "announces"),
    ],
)
def test_a_header_of_another_format_or_length_is_refused(small: bytes, changes: dict[str, int], reason: str) -> None:
    with pytest.raises(SnapshotError, match=reason):
        _decodes(_header(small, **changes))


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "truncated"),
        (b"\x80\x05\x95" + b"\0" * 60, "a pickle"),
        (b"PK\x03\x04" + b"\0" * 60, "not a RevPulse shard state"),
    ],
)
def test_what_is_not_a_snapshot_at_all_is_refused(blob: bytes, reason: str) -> None:
    with pytest.raises(SnapshotError, match=reason):
        _decodes(blob)


def test_a_snapshot_of_another_shard_is_refused(small: bytes) -> None:
    with pytest.raises(SnapshotError, match="a snapshot of shard 0, read for shard 3"):
        _decodes(small, shard=3)


def _lines(blob: bytes) -> list[Any]:
    return [orjson.loads(line) for line in unseal(blob).split(b"\n")]


def _resealed(lines: list[Any]) -> bytes:
    return seal(b"\n".join(orjson.dumps(line) for line in lines))


def _wrong(value: object) -> object:
    """A value of another JSON type, wrong wherever `value` stands."""
    if value is None:
        return []
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return "x"
    if isinstance(value, str):
        return 5
    if isinstance(value, list):
        return {}
    return []


def _some(count: int) -> list[int]:
    """Indexes to mutate among `count`: the first dozen (every position of a flat list's pairs, triples and
    quadruples) and the last three; all of them would take minutes."""
    return sorted({*range(min(count, 12)), *range(max(0, count - 3), count)})


def _mutations(value: Any) -> Iterator[Any]:
    """`value` with one of its values (at any depth) replaced by a wrong one, each in turn."""
    yield _wrong(value)
    if isinstance(value, list):
        for i in _some(len(value)):
            for mutated in _mutations(value[i]):
                yield [*value[:i], mutated, *value[i + 1 :]]
    elif isinstance(value, dict):
        keys = list(value)
        for i in _some(len(keys)):
            for mutated in _mutations(value[keys[i]]):
                yield value | {keys[i]: mutated}


def test_a_value_of_a_wrong_type_anywhere_is_refused_even_with_a_valid_checksum(small: bytes) -> None:
    lines = _lines(small)
    # The head, and the id and record of one account of each shape (which of its fields are empty).
    shapes = {tuple(map(bool, lines[i])): i for i in range(len(lines) - 1, 1, -2)}
    checked = 0
    for index in [0, *sorted(i for shape in shapes.values() for i in (shape - 1, shape))]:
        for mutated in _mutations(lines[index]):
            with pytest.raises(SnapshotError):
                _decodes(_resealed([*lines[:index], mutated, *lines[index + 1 :]]))
            checked += 1
    assert len(shapes) > 3 and checked > 500


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda head: head.pop("next_offset"), "expected the keys"),
        (lambda head: head.update(extra=1), "expected the keys"),
        (lambda head: head["engine"].update(history_of_mars=1), "unknown to this version"),
        (lambda head: head["engine"].pop("sequence"), "no sequence"),
        (lambda head: head.update(accounts=head["accounts"] + 1), "announced"),
        (lambda head: head.update(accounts=2**62), "announced"),
        (lambda head: head.update(accounts=-1), "announced"),
        (lambda head: head["engine"]["ledger"].append(["q", "s", [1]]), "pairs"),
        (lambda head: head["engine"]["ledger"].append(["q", 5, [1, 2]]), "expected a string"),
        (lambda head: head["engine"]["ledger"].append(["q", "s"]), "expected 3 elements"),
        (lambda head: head["engine"].update(watermark=2**63), "64-bit"),
        (lambda head: head["engine"].update(sequence=1.5), "64-bit"),
        (lambda head: head["engine"]["ledger"][0][2].__setitem__(1, "1e5"), "integer"),
        (lambda head: head["engine"]["ledger"][0][2].__setitem__(0, "9" * 201), "integer"),
        (lambda head: head["engine"]["lead_opportunities"].update(l9=["no-such-opportunity"]), "does not hold"),
        (lambda head: head.update(outcomes=[["t" * 300, "x", "accepted", 1]]), "at most 256"),
        (lambda head: head["engine"].update(history_finals=[0, 0, [["mrr", "all"]], []]), "distinct"),
        (lambda head: head["engine"].update(history_finals=[0, 0, [["h:captured", ""]] * 2, []]), "distinct"),
        (lambda head: head["engine"].update(history_finals=[0, 0, [["h:captured", ""]], [[24, "2"]]]), "not listed"),
        (lambda head: head["engine"].update(history_finals=[0, 0, [["h:captured", ""]], [[24, "g"]]]), "hex"),
        (lambda head: head["engine"].update(history_finals=[0, 0, [], [[24, "f" * 99]]]), "at most 1"),
    ],
)
def test_a_head_that_is_not_ours_is_refused(small: bytes, change: Any, reason: str) -> None:
    lines = _lines(small)
    change(lines[0])
    with pytest.raises(SnapshotError, match=reason):
        _decodes(_resealed(lines))


def test_cells_listed_twice_are_refused(small: bytes) -> None:
    lines = _lines(small)
    lines[0]["engine"]["ledger"].append(lines[0]["engine"]["ledger"][0])
    with pytest.raises(SnapshotError, match="listed twice"):
        _decodes(_resealed(lines))


def _accounts_of(lines: list[Any]) -> list[list[Any]]:
    """The account records among a snapshot's lines."""
    return lines[2::2]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda record: record[9].append("no-such-lead"), "does not hold"),
        (lambda record: record[10].append("no-such-opportunity"), "does not hold"),
        (lambda record: record[3].append([5, 6]), "segment stamps for"),
        (lambda record: record[3].append([5]), "lists of 2"),
        (lambda record: record.__setitem__(7, [1000, 5, [], "x", []]), "one known letter per event"),
        (lambda record: record.__setitem__(7, [1000, 5, "AAAAAA==", "uuu", []]), "one known letter per event"),
        (lambda record: record.__setitem__(7, [1000, 5, "!!", "u", []]), "not base64"),
        (lambda record: record.__setitem__(7, [1000, 5, "AAA=", "uu", []]), "whole uint32"),
        (lambda record: record.__setitem__(7, [7, 5, [], "u", []]), "scale"),
        (lambda record: record.__setitem__(7, [1000, 5, [-1], "uu", []]), "integer ≥ 0"),
        (lambda record: record.__setitem__(7, [1000, 5, [1], "uu", [2, 9]]), "event indices"),
        (lambda record: record.__setitem__(7, [1000, 5, [1], "uu", [1, 9, 0, 9]]), "event indices"),
        (lambda record: record.__setitem__(7, [1000, 5, [1], "uu", [1, 0]]), "sequence"),
        (lambda record: record.__setitem__(7, [1000, 2**62, [2**62], "uu", []]), "out of range"),
        (lambda record: record[7].append(1), "expected"),
        # the form before `product_codec`, still read
        (lambda record: record.__setitem__(7, [[1, 2, "product.unknown"]]), "unknown product event types"),
        (lambda record: record.__setitem__(7, [[1, 2, "product.usage"], [1, 2]]), "lists of 3"),
        (lambda record: record.append(None), "13 elements"),
        (lambda record: record.__setitem__(5, [[1, 2, "e", "lead.created", 1, "a", None, None, None, None]]), "fields"),
    ],
)
def test_an_account_that_is_not_ours_is_refused(small: bytes, change: Any, reason: str) -> None:
    lines = _lines(small)
    record = _accounts_of(lines)[0]
    change(record)
    with pytest.raises(SnapshotError, match=reason):
        _decodes(_resealed(lines))


def test_an_event_that_is_not_ours_is_refused(small: bytes) -> None:
    lines = _lines(small)
    billing = next(record[5] for record in _accounts_of(lines) if record[5])
    fields = billing[0][2]  # [event_id, type, µs, account_id, segment, entity_id, money, stage, lead_id, channel]
    for field, value, reason in [
        (1, "lead.created", "subscription"),
        (1, "no.such_type", "subscription"),
        (0, "x" * 300, "at most 256"),
        (3, 5, "expected a string"),
        (6, "seven", "integer"),
        (6, 1.5, "integer"),
        (7, "vip", "lead stage"),
        (2, "1", "64-bit"),
    ]:
        original = fields[field]
        fields[field] = value
        with pytest.raises(SnapshotError, match=reason):
            _decodes(_resealed(lines))
        fields[field] = original
    fields.append(None)
    with pytest.raises(SnapshotError, match="expected 10 elements"):
        _decodes(_resealed(lines))
    fields.pop()
    assert _decodes(_resealed(lines)) is not None


def test_a_stage_change_without_a_stage_is_refused(small: bytes) -> None:
    lines = _lines(small)
    fields = next(iter(lines[0]["engine"]["leads"].values()))[0][2]
    fields[1], fields[7] = "lead.stage_changed", None
    with pytest.raises(SnapshotError, match="without a stage"):
        _decodes(_resealed(lines))


def test_an_entity_event_of_an_account_not_held_is_refused(small: bytes) -> None:
    lines = _lines(small)
    events = next(iter(lines[0]["engine"]["leads"].values()))
    events[0][2][3] = "no-such-account"
    with pytest.raises(SnapshotError, match="not held"):
        _decodes(_resealed(lines))


def test_an_account_listed_twice_is_refused(small: bytes) -> None:
    lines = _lines(small)
    lines[0]["accounts"] += 1
    lines += lines[1:3]
    with pytest.raises(SnapshotError, match="listed twice"):
        _decodes(_resealed(lines))


@pytest.mark.parametrize(
    "body",
    [b"", b"\n", b"{}", b"[]", b"null", b"[" * 5000 + b"]" * 5000, b'{"shard": 0', b"\xff\xfe", b"1e999"],
)
def test_a_body_that_is_not_a_head_is_refused(body: bytes) -> None:
    with pytest.raises(SnapshotError):
        _decodes(seal(body))


def test_money_is_exact_to_the_nano() -> None:
    event = Event("e", "subscription.started", 1, "a", None, "s", 123 * NANOS + 1)
    engine = Engine()
    engine.accounts.add("a").billing.append((1, 1, event))
    restored = decode_state(encode_state(ShardState(engine), 0), 0, EngineConfig())
    account = restored.engine.accounts.get("a")
    assert account is not None and account.billing[0][2].money == 123 * NANOS + 1
