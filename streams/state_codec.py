"""A shard's state as data: the bytes of a snapshot, and the state again from them, with nothing that can run code.

Snapshots live in the data dir and on the `<id>-snapshots` topic, where whoever can write there can replace them.
So they hold plain data only (JSON: strings, integers, lists, maps, true/false/null), never a reference to code,
and reading one checks every value's type and shape, and the references between entities the engine follows,
before any of it reaches the engine. Whatever is wrong raises one `SnapshotError` saying what; the caller then
rebuilds the shard from the shard topic. Pure: no IO.

A snapshot (format 2; format 1 was the pickle of earlier versions, which nothing reads any more):

    header  16 bytes   magic b"RPST", format (u16), seal (u8: 0 SHA-256, 1 HMAC-SHA256), 0 (u8), body length (u64)
    body               lines of JSON: a head (the shard, its offsets, outcome counts and engine attributes, and
                       how many accounts follow), then two lines per account: its id and its `Account.encode`
    digest  32 bytes   SHA-256, or HMAC-SHA256 with the deployment key, of header and body (all big-endian)

With a key (`REVPULSE_STATE_KEY`), only snapshots sealed with that key are read: a forged one cannot be, and an
unsealed one could be anybody's. Without a key the digest catches damage (a torn write, a flipped bit), not
forgery: a forged snapshot still cannot run code, but it can hold false numbers. Integers beyond 64 bits (money
in nanos, summed) are decimal strings where an integer may be that large (`plain`). Accounts are lines of their
own so a restore checks and keeps one account's bytes at a time, never the whole state as objects at once.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import reprlib
import struct
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from itertools import chain, repeat
from typing import Any, BinaryIO, Final, NoReturn

import orjson

from revpulse.schemas.models import EVENT_TYPES, LEAD_STAGES, MAX_ID_LENGTH, Event, event_fields
from revpulse.streams.engine import ACCOUNT_RECORD, AccountStore, Engine, EngineConfig, Entity, Keyed, Timeline
from revpulse.streams.history import QUANTITIES_OF_HISTORY, Finals
from revpulse.streams.ledger import Cells
from revpulse.streams.partition import ShardState
from revpulse.streams.plain import INT64_MAX, INT64_MIN, wide_int, widen
from revpulse.streams.point_cells import PackedCells
from revpulse.streams.product_codec import ProductCodecError, check_product

MAGIC: Final = b"RPST"
FORMAT: Final = 2
_HEADER: Final = struct.Struct(">4sHBBQ")
_DIGEST_BYTES: Final = 32
_READ_BYTES: Final = 1 << 20
_CHECKSUM, _SIGNED = 0, 1
_EVENT_FIELDS: Final = len(fields(Event))
# Canonical type names: a restored event shares them, and looking one up checks it.
_TYPE_NAMES: Final = {name: name for name in EVENT_TYPES}
_PRODUCT_TYPES: Final = frozenset(name for name in EVENT_TYPES if name.startswith("product."))
_LABEL_LENGTH: Final = 256  # topics, types and outcomes: they become label values of revpulse_events_total


class SnapshotError(ValueError):
    """Bytes that are not a shard state this worker can trust, and why: the shard is rebuilt instead."""


def _fail(where: str, what: str) -> NoReturn:
    raise SnapshotError(f"{where}: {what}" if where else what)


def _shown(value: object) -> str:
    return f"{type(value).__name__} {reprlib.repr(value)}"


# -- sealing ----------------------------------------------------------------------------------------------------


def _hasher(key: bytes | None) -> Any:
    return hmac.new(key, digestmod=hashlib.sha256) if key else hashlib.sha256()


class _Sealer:
    """Writes a sealed snapshot as it goes: the header (announcing `length` bytes of body), the body in parts,
    then the digest of both (an HMAC with `key` when given)."""

    def __init__(self, out: BinaryIO, length: int, key: bytes | None) -> None:
        header = _HEADER.pack(MAGIC, FORMAT, _SIGNED if key else _CHECKSUM, 0, length)
        self.out, self.digest = out, _hasher(key)
        self.write(header)

    def write(self, part: bytes | memoryview) -> None:
        self.digest.update(part)
        self.out.write(part)

    def close(self) -> None:
        self.out.write(self.digest.digest())


def seal(body: bytes, key: bytes | None = None) -> bytes:
    """`body` framed: header, body, digest (an HMAC with `key` when given)."""
    out = io.BytesIO()
    sealer = _Sealer(out, len(body), key)
    sealer.write(body)
    sealer.close()
    return out.getvalue()


def verify(source: BinaryIO, key: bytes | None = None) -> int:
    """Read a sealed snapshot through once, without holding it: its frame and digest (with `key`, its signature)
    must check out. Returns the length of its body, which starts right after the header."""
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        _fail("", f"truncated: {len(header)} bytes, less than a header and a digest")
    magic, version, sealing, reserved, length = _HEADER.unpack(header)
    if magic != MAGIC:
        if header[:1] == b"\x80":
            _fail("", "a pickle (a snapshot of a version before format 2, or a forgery): never read")
        _fail("", f"not a RevPulse shard state (starts {header[:4]!r})")
    if version != FORMAT:
        _fail("", f"format {version}; this version reads format {FORMAT} only")
    if sealing not in (_CHECKSUM, _SIGNED) or reserved != 0:
        _fail("", f"unknown seal {sealing}/{reserved}")
    if key is not None and sealing != _SIGNED:
        _fail("", "not signed, and this worker reads only snapshots signed with its key (REVPULSE_STATE_KEY)")
    if key is None and sealing == _SIGNED:
        _fail("", "signed with a deployment key, and this worker has none (set REVPULSE_STATE_KEY to read it)")
    digest = _hasher(key)
    digest.update(header)
    remaining = length
    while remaining:
        part = source.read(min(remaining, _READ_BYTES))
        if not part:
            break
        digest.update(part)
        remaining -= len(part)
    tail = source.read(_DIGEST_BYTES + 1)
    follows = length - remaining + max(0, len(tail) - _DIGEST_BYTES)
    if remaining or len(tail) != _DIGEST_BYTES:
        _fail("", f"the header announces {length} bytes of body, {follows} follow (truncated or padded)")
    if not hmac.compare_digest(digest.digest(), tail):
        if key is not None:
            _fail("", "the signature does not match: altered, or signed with another key")
        _fail("", "the checksum does not match: the snapshot is damaged")
    return length


def unseal(blob: bytes, key: bytes | None = None) -> bytes:
    """The body of a sealed snapshot, once its frame and digest check out (with `key`, its signature)."""
    length = verify(io.BytesIO(blob), key)
    return blob[_HEADER.size : _HEADER.size + length]


# -- checks of plain data ---------------------------------------------------------------------------------------


def _list(value: object, where: str, length: int | None = None) -> list[Any]:
    if type(value) is not list:
        _fail(where, f"expected a list, got {_shown(value)}")
    if length is not None and len(value) != length:
        _fail(where, f"expected {length} elements, got {len(value)}")
    return value


def _map(value: object, where: str) -> dict[str, Any]:
    """A JSON object (its keys are strings)."""
    if type(value) is not dict:
        _fail(where, f"expected an object, got {_shown(value)}")
    return value


def _int(value: object, where: str) -> int:
    if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
        _fail(where, f"expected a 64-bit integer, got {_shown(value)}")
    return value


def _optional_int(value: object, where: str) -> int | None:
    return None if value is None else _int(value, where)


def _wide(value: object, where: str) -> int:
    number = wide_int(value)
    if number is None:
        _fail(where, f"expected an integer, got {_shown(value)}")
    return number


def _text(value: object, where: str, limit: int | None = None) -> str:
    if type(value) is not str or (limit is not None and len(value) > limit):
        _fail(where, f"expected a string{f' of at most {limit} characters' if limit else ''}, got {_shown(value)}")
    return value


def _ints(values: list[Any], where: str) -> list[int]:
    """`values`, all 64-bit integers (checked in C: these lists are the bulk of a state)."""
    if values and (set(map(type, values)) != {int} or min(values) < INT64_MIN or max(values) > INT64_MAX):
        _fail(where, "expected 64-bit integers only")
    return values


def _wides(values: list[Any], where: str) -> list[int]:
    """`values` as integers, wide ones (decimal strings) read back."""
    if not values or set(map(type, values)) == {int}:
        return values
    numbers = list(map(wide_int, values))
    if None in numbers:
        _fail(where, f"expected integers, got {_shown(values[numbers.index(None)])}")
    return numbers


def _texts(values: list[Any], where: str) -> list[str]:
    if values and set(map(type, values)) != {str}:
        _fail(where, "expected strings only")
    return values


def _int_map(value: object, where: str) -> dict[str, int]:
    mapping = _map(value, where)
    _ints(list(mapping.values()), where)
    return mapping


def _stamp(value: object, where: str) -> tuple[int, int]:
    t, seq = _list(value, where, 2)
    return _int(t, where), _int(seq, where)


def _event(values: object, family: str) -> Event:
    """An event from its fields (`event_fields` order), of a type of `family` (`lead.` ...). Locations in its
    errors are the field's; the caller prefixes where the event is (only on failure: this is most of a restore)."""
    event_id, kind, t, account_id, segment, entity_id, money, stage, lead_id, channel = _list(
        values, "fields", _EVENT_FIELDS
    )
    name = _TYPE_NAMES.get(kind) if type(kind) is str else None
    if name is None or not name.startswith(family):
        _fail("type", f"expected a {family}* event type, got {_shown(kind)}")
    _text(event_id, "event_id", MAX_ID_LENGTH)
    _int(t, "t")
    for text in (account_id, segment, entity_id, lead_id, channel):
        if text is not None and (type(text) is not str or len(text) > MAX_ID_LENGTH):
            _fail("ids", f"expected a string of at most {MAX_ID_LENGTH} characters, got {_shown(text)}")
    if money is not None:
        money = _wide(money, "money")
    if stage is not None and (type(stage) is not str or stage not in LEAD_STAGES):
        _fail("stage", f"expected a lead stage, got {_shown(stage)}")
    if name == "lead.stage_changed" and stage is None:
        _fail("stage", "a stage change without a stage")
    return Event(event_id, name, t, account_id, segment, entity_id, money, stage, lead_id, channel)


def _timeline(value: object, where: str, family: str) -> Timeline:
    """[[µs, seq, [event fields]], ...] -> [(µs, seq, event), ...]."""
    timeline: Timeline = []
    try:
        for entry in _list(value, ""):
            if type(entry) is not list or len(entry) != 3:
                _fail("", f"expected [µs, seq, [event fields]], got {_shown(entry)}")
            timeline.append((_int(entry[0], "µs"), _int(entry[1], "seq"), _event(entry[2], family)))
    except SnapshotError as exc:
        raise SnapshotError(f"{where}[{len(timeline)}] {exc}") from None
    return timeline


def _dump_timeline(timeline: Timeline) -> list[tuple[Any, ...]]:
    return [(t, seq, event_fields(event)) for t, seq, event in timeline]


def _tuples(value: object, where: str, size: int) -> list[Any]:
    """The values of a list of lists of `size` values each, flat (checked in C)."""
    rows = _list(value, where)
    if rows and (set(map(type, rows)) != {list} or set(map(len, rows)) != {size}):
        _fail(where, f"expected lists of {size} values")
    return list(chain.from_iterable(rows))


# -- accounts ---------------------------------------------------------------------------------------------------


def check_account(record: object, leads: Collection[str], opportunities: Collection[str], where: str = "") -> None:
    """Raise SnapshotError unless `record` (parsed JSON) is an encoded account (`ACCOUNT_RECORD`) whose leads and
    opportunities are among `leads` and `opportunities`: then `Account.decode` rebuilds it without failing."""
    try:
        _check_account(record, leads, opportunities)
    except SnapshotError as exc:
        raise SnapshotError(f"{where} {exc}" if where else str(exc)) from None


def _check_account(record: object, leads: Collection[str], opportunities: Collection[str]) -> None:
    # Locations are constants: formatting them for every account would be a good part of a restore.
    fields = _list(record, "record", ACCOUNT_RECORD)
    ids, latest, kept, stamps, values, billing, first_trial, product, last_active, lead_ids, opportunity_ids = fields[
        :11
    ]
    base, active_before = fields[11:]
    if active_before is not None:
        _int_map(active_before, "active_before")
    for seen in _map(ids, "ids").values():
        _int_map(seen, "ids")
    _int_map(latest, "latest")
    _int_map(kept, "kept")
    _int_map(last_active, "last_active")
    _ints(_tuples(stamps, "segment_stamps", 2), "segment_stamps")
    _texts(_list(values, "segment_values"), "segment_values")
    if len(stamps) != len(values):
        _fail("segment_stamps", f"{len(stamps)} segment stamps for {len(values)} segments")
    _timeline(billing, "billing", "subscription.")
    if first_trial is not None:
        _stamp(first_trial, "first_trial")
    if isinstance(product, list) and product and type(product[0]) is list:  # the form before `product_codec`
        product = _tuples(product, "product", 3)
        _ints(product[0::3], "product")
        _ints(product[1::3], "product")
        types = _texts(product[2::3], "product")
        if not _PRODUCT_TYPES.issuperset(types):
            _fail("product", f"unknown product event types {sorted(set(types) - _PRODUCT_TYPES)[:3]}")
    else:
        try:
            check_product(product)
        except ProductCodecError as exc:
            _fail("product", str(exc))
    for name, ids_named, known in (("leads", lead_ids, leads), ("opportunities", opportunity_ids, opportunities)):
        for entity_id in _texts(_list(ids_named, name), name):
            if entity_id not in known:
                _fail(name, f"names {entity_id!r}, which the state does not hold")
    if base is not None:
        subscriptions, recorded, paid_before, last_churn, hour, mrr = _list(base, "billing_base", 6)
        for amount in _map(subscriptions, "billing_base").values():
            _wide(amount, "billing_base")
        _wide(recorded, "billing_base")
        if type(paid_before) is not bool:
            _fail("billing_base", f"expected true or false, got {_shown(paid_before)}")
        _optional_int(last_churn, "billing_base")
        _int(hour, "billing_base")
        _wide(mrr, "billing_base")


# -- engine attributes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """How a snapshot holds one Engine attribute: `dump` makes plain data of its value; `load` checks that data
    (hostile) and makes the value again, given where it is (for errors) and the engine restored so far;
    `default` makes the value for a snapshot written before the attribute existed (None: it must be there)."""

    dump: Callable[[Any], object]
    load: Callable[[Any, str, Engine], object]
    default: Callable[[], object] | None = None


def _same(value: object) -> object:
    return value


def _scalar(check: Callable[[object, str], object]) -> Callable[[Any, str, Engine], object]:
    return lambda value, where, engine: check(value, where)


def _dump_cells(cells: Cells) -> list[object]:
    return cell_groups(cells.values)


def cell_groups(values: Mapping[tuple[str, str, int], int]) -> list[object]:
    """[[quantity, segment, [hour, amount, hour, amount, ...]], ...]: a quantity and segment once for all their
    hours. Quantities may be any string and hours any integer (not only the declared quantities'), amounts too."""
    if isinstance(values, PackedCells):
        return values.groups()  # type: ignore[return-value]
    groups: dict[tuple[str, str], list[int]] = {}
    for (quantity, segment, hour), amount in values.items():
        group = groups.get((quantity, segment))
        if group is None:
            group = groups[(quantity, segment)] = []
        group += (hour, amount)
    return [(quantity, segment, group) for (quantity, segment), group in groups.items()]


def _cells(attribute: str) -> Callable[[Any, str, Engine], Cells]:
    """Loads cells as the class a new engine holds in `attribute` (the ledger's keeps sums derived from them)."""

    def load(value: object, where: str, engine: Engine) -> Cells:
        return type(getattr(engine, attribute))(cell_values(value, where))

    return load


def cell_values(value: object, where: str) -> dict[tuple[str, str, int], int]:
    values: dict[tuple[str, str, int], int] = {}
    count = 0
    for group in _list(value, where):
        quantity, segment, pairs = _list(group, where, 3)
        at = f"{where}[{quantity!r}, {segment!r}]" if type(quantity) is str and type(segment) is str else where
        _text(quantity, at)
        _text(segment, at)
        pairs = _list(pairs, at)
        if len(pairs) % 2:
            _fail(at, "not pairs of (hour, amount)")
        keys = zip(repeat(quantity), repeat(segment), _wides(pairs[0::2], at), strict=False)  # as many as hours
        amounts = _wides(pairs[1::2], at)
        values.update(zip(keys, amounts, strict=False))
        count += len(amounts)
    if len(values) != count:
        _fail(where, "a cell is listed twice")
    return values


def _dump_channels(channels: dict[str, Keyed]) -> dict[str, object]:
    return {channel: (keyed.ids, keyed.latest, keyed.kept) for channel, keyed in channels.items()}


def _load_channels(value: object, where: str, engine: Engine) -> dict[str, Keyed]:
    channels = {}
    for channel, data in _map(value, where).items():
        at = f"{where}[{channel!r}]"
        ids, latest, kept = _list(data, at, 3)
        for topic, seen in _map(ids, f"{at}.ids").items():
            _int_map(seen, f"{at}.ids[{topic!r}]")
        channels[channel] = Keyed(ids, _int_map(latest, f"{at}.latest"), _int_map(kept, f"{at}.kept"))
    return channels


def _dump_entities(entities: dict[str, Entity]) -> dict[str, object]:
    return {entity_id: _dump_timeline(entity.events) for entity_id, entity in entities.items()}


def _entities(family: str) -> Callable[[Any, str, Engine], dict[str, Entity]]:
    def load(value: object, where: str, engine: Engine) -> dict[str, Entity]:
        return {
            entity_id: Entity(_timeline(events, f"{where}[{entity_id!r}]", family))
            for entity_id, events in _map(value, where).items()
        }

    return load


def _load_lead_opportunities(value: object, where: str, engine: Engine) -> dict[str, set[str]]:
    links = {}
    for lead_id, named in _map(value, where).items():
        at = f"{where}[{lead_id!r}]"
        opportunity_ids = set(_texts(_list(named, at), at))
        if not opportunity_ids <= engine.opportunities.keys():
            _fail(at, "names an opportunity the state does not hold")
        links[lead_id] = opportunity_ids
    return links


_HEX: Final = frozenset("0123456789abcdef")


def _dump_finals(finals: Finals) -> list[object]:
    # A shape's bit mask as hex: it has a bit per (quantity, segment) pair, more than 64 of them.
    return [finals.hour, finals.cut, finals.pairs, [(hour, f"{mask:x}") for hour, mask in finals.shapes.items()]]


def _load_finals(value: object, where: str, engine: Engine) -> Finals:
    hour, cut, pairs, shapes = _list(value, where, 4)
    pairs = [tuple(_texts(_list(pair, f"{where}.pairs", 2), f"{where}.pairs")) for pair in _list(pairs, where)]
    if any(pair[0] not in QUANTITIES_OF_HISTORY for pair in pairs) or len(set(pairs)) != len(pairs):
        _fail(f"{where}.pairs", "not distinct (history quantity, segment) pairs")
    masks: dict[int, int] = {}
    for shape in _list(shapes, f"{where}.shapes"):
        at, mask = _list(shape, f"{where}.shapes", 2)
        text = _text(mask, f"{where}.shapes", len(pairs) // 4 + 1)
        if not text or not set(text) <= _HEX:
            _fail(f"{where}.shapes", f"expected a hex mask, got {_shown(mask)}")
        masks[_int(at, f"{where}.shapes")] = int(text, 16)
    if any(mask.bit_length() > len(pairs) for mask in masks.values()):
        _fail(f"{where}.shapes", "a mask names a pair not listed")
    return Finals(_int(hour, where), _int(cut, where), pairs, masks)


def _load_segments(value: object, where: str, engine: Engine) -> set[str]:
    return set(_texts(_list(value, where), where))


# Engine attributes a snapshot holds, in the order a restore loads them (a loader may read those before it). A new
# attribute of `Engine` is added here, with a `default` if snapshots written before it must still be read; one a
# snapshot leaves out goes in ENGINE_ELSEWHERE. A snapshot naming an attribute not listed is refused.
ENGINE_FIELDS: Final[dict[str, Field]] = {
    "ledger": Field(_dump_cells, _cells("ledger")),
    "channels": Field(_dump_channels, _load_channels),
    "leads": Field(_dump_entities, _entities("lead.")),
    "opportunities": Field(_dump_entities, _entities("opportunity.")),
    "lead_opportunities": Field(
        lambda links: {lead_id: sorted(ids) for lead_id, ids in links.items()}, _load_lead_opportunities
    ),
    "watermark": Field(_same, _scalar(_optional_int)),
    "segments_seen": Field(sorted, _load_segments),
    "sequence": Field(_same, _scalar(_int)),
    "folded_at": Field(_same, _scalar(_optional_int)),
    "fold_before": Field(_same, _scalar(_int)),
    "history": Field(_dump_cells, _cells("history")),
    "history_until": Field(_same, _scalar(_optional_int)),
    "history_from": Field(_same, _scalar(_optional_int)),
    "history_finals": Field(_dump_finals, _load_finals, default=Finals),
    "topic_latest": Field(_same, _scalar(_int_map), default=dict),
}
# Engine attributes not in the head: `accounts` (the lines after it), `config` (the restoring worker's own),
# `pending` (empty between batches, when snapshots are taken).
ENGINE_ELSEWHERE: Final = frozenset({"accounts", "config", "pending"})
_HEAD_KEYS: Final = frozenset({"shard", "next_offset", "applied", "outcomes", "engine", "accounts"})


# -- the shard state --------------------------------------------------------------------------------------------


def _json(data: bytes, where: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        _fail(where, f"not JSON ({exc})")


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits (rare); anything else fails again, as it should
        return orjson.dumps(widen(value))


def encode_state(state: ShardState, shard: int, key: bytes | None = None) -> bytes:
    """The snapshot of shard `shard` in `state` (`write_state`), as bytes."""
    out = io.BytesIO()
    write_state(out, state, shard, key)
    return out.getvalue()


def write_state(out: BinaryIO, state: ShardState, shard: int, key: bytes | None = None) -> None:
    """Write the snapshot of shard `shard` in `state`, taken between batches; signed when `key` is given. Written
    as it goes, the accounts straight from the store's arena: a forked copy writing it copies next to nothing."""
    engine = state.engine
    if engine.pending:
        raise SnapshotError("a snapshot is taken between batches, after `flush`")
    unlisted = vars(engine).keys() - ENGINE_FIELDS.keys() - ENGINE_ELSEWHERE
    if unlisted:
        # A snapshot without them would restore a different engine: list them in ENGINE_FIELDS.
        raise SnapshotError(f"Engine attributes {sorted(unlisted)} are not in state_codec.ENGINE_FIELDS")
    store = engine.accounts
    head = _dumps(
        {
            "shard": shard,
            "next_offset": state.next_offset,
            "applied": [(*source, *position) for source, position in state.applied.items()],
            "outcomes": [(*labels, count) for labels, count in state.outcomes.items()],
            "engine": {name: field.dump(getattr(engine, name)) for name, field in ENGINE_FIELDS.items()},
            "accounts": len(store),
        }
    )
    lateness = engine.config.allowed_lateness_us
    hot = [(b"\n" + orjson.dumps(i) + b"\n", account.encode(lateness)) for i, account in store.hot.items()]
    # The header announces the body's length: the store keeps its encoded accounts' count (`cold_line_bytes`).
    length = len(head) + sum(len(line) + len(data) for line, data in hot) + store.cold_line_bytes
    sealer = _Sealer(out, length, key)
    sealer.write(head)
    for line, data in hot:
        sealer.write(line)
        sealer.write(data)
    for account_id, view in store.cold_encoded():
        sealer.write(b"\n" + orjson.dumps(account_id) + b"\n")
        sealer.write(view)
    sealer.close()


def decode_state(blob: bytes, shard: int, config: EngineConfig, key: bytes | None = None) -> ShardState:
    """The state a snapshot of shard `shard` holds (`read_state`), from bytes."""
    return read_state(io.BytesIO(blob), shard, config, key)


def read_state(source: BinaryIO, shard: int, config: EngineConfig, key: bytes | None = None) -> ShardState:
    """The state a snapshot of shard `shard` holds, checked throughout; SnapshotError saying why it cannot be.
    `source` (seekable) is read twice, never held whole: its seal first, then its lines."""
    remaining = verify(source, key)
    source.seek(_HEADER.size)

    def line() -> bytes:
        nonlocal remaining
        data = source.readline(remaining)
        remaining -= len(data)
        return data[:-1] if data.endswith(b"\n") else data

    head = _map(_json(line(), "head"), "head")
    if head.keys() != _HEAD_KEYS:
        _fail("head", f"expected the keys {sorted(_HEAD_KEYS)}, got {sorted(head)[:10]}")
    if _int(head["shard"], "shard") != shard:
        _fail("shard", f"a snapshot of shard {head['shard']}, read for shard {shard}")
    next_offset = _int(head["next_offset"], "next_offset")
    if next_offset < 0:
        _fail("next_offset", f"negative ({next_offset})")
    applied = {}
    for i, entry in enumerate(_list(head["applied"], "applied")):
        topic, partition, offset, index = _list(entry, f"applied[{i}]", 4)
        source_key = (_text(topic, f"applied[{i}]", _LABEL_LENGTH), _int(partition, f"applied[{i}]"))
        applied[source_key] = (_int(offset, f"applied[{i}]"), _int(index, f"applied[{i}]"))
    outcomes: Counter[tuple[str, str, str]] = Counter()
    for i, entry in enumerate(_list(head["outcomes"], "outcomes")):
        topic, kind, outcome, count = _list(entry, f"outcomes[{i}]", 4)
        labels = tuple(_text(label, f"outcomes[{i}]", _LABEL_LENGTH) for label in (topic, kind, outcome))
        outcomes[labels] = _int(count, f"outcomes[{i}]")  # type: ignore[index]
    engine = _engine(_map(head["engine"], "engine"), config)
    count = _int(head["accounts"], "accounts")
    store = engine.accounts = AccountStore(config.hot_accounts)
    leads, opportunities = engine.leads, engine.opportunities
    for i in range(count):
        if not remaining:
            _fail("accounts", f"{count} announced, {i} follow")
        account_id = _text(_json(line(), "an account's id"), "an account's id")
        data = line()
        try:
            check_account(orjson.loads(data), leads, opportunities)
        except (SnapshotError, orjson.JSONDecodeError) as exc:
            _fail(f"accounts[{account_id!r}]", str(exc))
        if account_id in store:
            _fail(f"accounts[{account_id!r}]", "listed twice")
        store.put_encoded(account_id, data)  # the bytes just checked are the account's encoding
    if remaining:
        _fail("accounts", f"{count} announced, more follow")
    for name, entities in (("leads", engine.leads), ("opportunities", engine.opportunities)):
        for entity_id, entity in entities.items():
            for _, _, event in entity.events:
                if (event.account_id or "") not in store:
                    _fail(f"engine.{name}[{entity_id!r}]", f"an event of account {event.account_id!r}, not held")
    return ShardState(engine, applied, outcomes, next_offset)


def _engine(attributes: dict[str, Any], config: EngineConfig) -> Engine:
    unknown = attributes.keys() - ENGINE_FIELDS.keys()
    if unknown:
        _fail("engine", f"attributes unknown to this version: {sorted(unknown)[:5]}")
    engine = Engine(config)
    for name, field in ENGINE_FIELDS.items():
        if name in attributes:
            value = field.load(attributes[name], f"engine.{name}", engine)
        elif field.default is not None:
            value = field.default()
        else:
            _fail("engine", f"no {name}")
        setattr(engine, name, value)
    return engine
