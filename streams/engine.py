"""The metrics engine: accepts validated events (SPEC §2: lateness, duplicates, watermark) into per-entity state
and keeps the global `Ledger` equal to an in-order replay of everything accepted.

Order independence comes from recomputing the contribution of the entity an event belongs to (an account's
billing, a lead, an opportunity) from its events sorted by (occurred_at, arrival), and applying only the
difference. The recompute happens once per entity per batch (`flush`), however many of its events the batch
holds, so a noisy entity costs a replay per batch, not per event; product events, the most frequent, take an
incremental path because each one's contribution stands alone.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Final

import orjson
import zstandard

from revpulse.schemas.models import NANOS, Event, event_fields
from revpulse.streams import history
from revpulse.streams.ledger import Contribution, LiveCells, add, fold
from revpulse.streams.plain import widen
from revpulse.streams.point_cells import PointCells
from revpulse.streams.product_codec import decode_product, encode_product
from revpulse.streams.quantities import (
    ACTIVATED,
    ACTIVE_ACCOUNTS,
    C0_CHURNED,
    C0_CUSTOMERS,
    C0_MRR_NOW,
    C0_MRR_RETAINED,
    CANCELED,
    CUSTOMERS_NOW,
    DEALS_LOST,
    DEALS_WON,
    LEADS_CREATED,
    LEADS_IN_STAGE,
    MARKETING_SPEND,
    MOVEMENT,
    MQLS,
    MRR_AT_T0,
    MRR_NOW,
    NEW_CUSTOMERS,
    OPEN_OPPORTUNITIES,
    OPEN_PIPELINE_AMOUNT,
    OPPORTUNITIES_CREATED,
    RENEWED,
    SALES_CYCLE_COUNT,
    SALES_CYCLE_SUM,
    SIGNUPS,
    SQLS,
    TIME_TO_CLOSE_COUNT,
    TIME_TO_CLOSE_SUM,
    TRIAL_CONVERSIONS,
    TRIALS_STARTED,
    WON_AMOUNT,
)
from revpulse.streams.windows import HOUR_US, LONGEST_WINDOW_HOURS, US_PER_SECOND

HALF_CENT: Final = NANOS // 200
_NO_HORIZON: Final = -(2**62)
_FORGET_AT: Final = 64  # ids of one key and topic kept before the first pass that forgets old ones
# Hours between folds of the live cells: a fold reads every cell, so weekly, for at most a week more of them.
_FOLD_EVERY_HOURS: Final = 7 * 24
_IDS_WORTH_FILTERING: Final = 16  # ids of one topic an encoding keeps without looking at their times
Stamp = tuple[int, int]  # (occurred_at µs, arrival sequence): the total order events are applied in
Timeline = list[tuple[int, int, Event]]

_PRODUCT_FLOWS: Final = {
    "product.signup": SIGNUPS,
    "product.trial_started": TRIALS_STARTED,
    "product.activated": ACTIVATED,
}


@dataclass(slots=True)
class Keyed:
    """Per routing key (SPEC §2), per input topic: the latest occurred_at accepted, and the ids of the accepted
    events still within the allowed lateness of it (id -> occurred_at)."""

    ids: dict[str, dict[str, int]] = field(default_factory=dict)
    latest: dict[str, int] = field(default_factory=dict)
    kept: dict[str, int] = field(default_factory=dict)  # topic -> ids left by its last pass of forgetting

    def forget(self, topic: str, ids: dict[str, int], horizon: int) -> None:
        """Forget the ids older than `horizon` (the topic's latest minus the allowed lateness): called once the
        ids have doubled since the last pass, so forgetting costs O(1) an event, amortized."""
        for old in [i for i, seen in ids.items() if seen < horizon]:
            del ids[old]
        self.kept[topic] = len(ids)

    def migrate(self) -> None:
        """Ids kept before they were per topic (a set per key): each topic the key has seen remembers them at its
        latest occurred_at, so they are forgotten one allowed lateness later."""
        legacy: object = self.ids
        if isinstance(legacy, (set, list)):
            self.ids = {topic: dict.fromkeys(legacy, latest) for topic, latest in self.latest.items()}


@dataclass(slots=True)
class Account(Keyed):
    segment_stamps: list[Stamp] = field(default_factory=list)
    segment_values: list[str] = field(default_factory=list)
    billing: Timeline = field(default_factory=list)
    first_trial: Stamp | None = None
    product: list[tuple[int, int, str]] = field(default_factory=list)
    last_active: dict[str, int] = field(default_factory=dict)  # segment (and "all") -> latest active slice
    # Tuples, not sets: most accounts have none or a few, and an empty set costs 216 bytes (× 1M accounts).
    leads: tuple[str, ...] = ()
    opportunities: tuple[str, ...] = ()
    # Where its billing events older than every window left it, once forgotten (see `Engine._fold_billing`):
    # (subscriptions' MRR, recorded MRR, paid before, slice of the last churn, last folded slice, its MRR).
    billing_base: tuple[dict[str, int], int, bool, int | None, int, int] | None = None
    # While a history is kept: per segment (and "all"), the latest slice of its forgotten product events, so a
    # point not yet final still counts the account active in a window reaching back before them.
    active_before: dict[str, int] | None = None
    # Its billing's contribution as last applied to the ledger: the "before" of the next change, instead of a
    # second replay. Held only while the account is an object (not encoded, not in snapshots).
    applied: Contribution | None = field(default=None, compare=False)
    billing_tail: BillingTail | None = field(default=None, compare=False)  # kept with `applied`

    def segment_at(self, stamp: Stamp) -> str:
        i = bisect_right(self.segment_stamps, stamp)
        return self.segment_values[i - 1] if i else "unknown"

    @property
    def latest_segment(self) -> str:
        return self.segment_values[-1] if self.segment_values else "unknown"

    def encode(self, lateness_us: int | None = None) -> bytes:
        """A compact copy: a few hundred bytes where the objects take a few KB. JSON (see `ACCOUNT_RECORD`), so
        that a snapshot can hold these bytes as they are and a restore can check them as data
        (`state_codec.check_account`); orjson writes no line break, which the snapshot's layout relies on.

        With `lateness_us`, without the ids past the lateness bound when a topic holds more than a few: SPEC §2
        forgets them, and the object keeps them until they have doubled (see `Engine.accept`), up to 64 of them a
        topic. An id past the bound is never read (`accept` checks its time), so keeping a few costs nothing."""
        ids = self.ids
        if lateness_us is not None and any(len(seen) > _IDS_WORTH_FILTERING for seen in ids.values()):
            bounds = {topic: latest - lateness_us for topic, latest in self.latest.items()}
            ids = {topic: {i: t for i, t in seen.items() if t >= bounds.get(topic, t)} for topic, seen in ids.items()}
        record = (
            ids,
            self.latest,
            self.kept,
            self.segment_stamps,
            self.segment_values,
            [(t, seq, event_fields(event)) for t, seq, event in self.billing],
            self.first_trial,
            encode_product(self.product),
            self.last_active,
            self.leads,
            self.opportunities,
            self.billing_base,
            self.active_before,
        )
        try:
            return orjson.dumps(record)
        except TypeError:  # money beyond 64 bits (rare): as decimal strings, which `decode` reads back
            return orjson.dumps(widen(record))

    @classmethod
    def decode(cls, data: bytes) -> Account:
        """The account `encode` wrote, or a record `state_codec.check_account` accepted: only rebuilt here, not
        checked again (this is the hot path of an account held encoded)."""
        record = orjson.loads(data)
        ids, latest, kept, stamps, values, billing, first_trial, product, last_active, leads, opps, base, active = (
            record
        )
        events: Timeline = []
        for t, seq, fields in billing:
            event = Event(*fields)
            if type(event.money) is str:
                event.money = int(event.money)
            events.append((t, seq, event))
        if base is not None:
            subscriptions, recorded, paid_before, last_churn, hour, mrr = base
            subscriptions = {sub_id: int(amount) for sub_id, amount in subscriptions.items()}
            base = (subscriptions, int(recorded), paid_before, last_churn, hour, int(mrr))
        # JSON has lists only: the stamps and product events become the tuples the bisects compare again (in C).
        return cls(
            ids,
            latest,
            kept,
            list(map(tuple, stamps)),
            values,
            events,
            None if first_trial is None else (first_trial[0], first_trial[1]),
            decode_product(product) if not product or type(product[0]) is int else list(map(tuple, product)),
            last_active,
            tuple(leads),
            tuple(opps),
            base,
            active,
        )


# An encoded account (`Account.encode`), a JSON list: [ids {topic: {event id: µs}}, latest {topic: µs},
# kept {topic: n}, segment stamps [[µs, seq]], segment values [str], billing [[µs, seq, [event fields]]],
# first trial [µs, seq] | null, product (`product_codec`; before it, [[µs, seq, type]]), last active
# {segment: hour}, leads [id], opportunities [id], billing base [{subscription: mrr}, mrr, paid before,
# last churn | null, hour, mrr] | null, active before {segment: hour} | null].
# Money (an event's, the billing base's) may be a decimal string (`plain.widen`).
ACCOUNT_RECORD: Final = 13


class AccountStore:
    """Accounts by id: the most recently used as objects, the others encoded, so state per account stays small
    at millions of accounts. Only `evict` (between batches) encodes, so an account a batch holds stays live.

    The encoded accounts lie in slots of one arena, not one bytes object each. A snapshot is written by a forked
    copy of the worker (`agents.snapshots`), and in CPython reading an object writes its reference count: with an
    object per account, the copy would write, and so duplicate, nearly every page of the store. Reading a slice of
    the arena writes nothing there. A slot is the encoding's length rounded up to one of eight sizes per power of
    two (at most 1/8 unused); an account taken out frees its slot, and the next encoding of that size takes it,
    so a store whose accounts churn does not grow. While a copy reads the arena (`holds`), encodings go to its
    end instead: writing a freed slot would make the worker copy the page the copy still shares.

    An encoding lies in its slot compressed (zstd): about half the bytes for ~15 µs a cold account touched."""

    def __init__(self, hot_limit: int) -> None:
        self.hot_limit = hot_limit
        self.hot: dict[str, Account] = {}  # least recently used first
        # the encoded ones: id -> start << 64 | length encoded << 32 | length compressed, in the arena
        self._where: dict[str, int] = {}
        self._arena = bytearray()
        self._free: dict[int, list[int]] = {}  # slot size -> starts of the free slots of that size
        self.holds = 0  # forked copies reading the arena
        # Σ over the encoded accounts of their snapshot lines' bytes (`_line_bytes`): a snapshot's header announces
        # its length, and counting it as the store changes spares the copy writing one a pass over every account.
        self.cold_line_bytes = 0

    def get(self, account_id: str) -> Account | None:
        account = self.hot.pop(account_id, None)
        if account is None:
            place = self._where.pop(account_id, None)
            if place is None:
                return None
            start, length = place >> 64, place & _LENGTH_MASK
            account = Account.decode(_DECOMPRESSOR.decompress(self._arena[start : start + length]))
            self._free.setdefault(slot_size(length), []).append(start)
            self.cold_line_bytes -= _line_bytes(account_id, place >> 32 & _LENGTH_MASK)
        self.hot[account_id] = account
        return account

    def add(self, account_id: str) -> Account:
        account = self.hot[account_id] = Account()
        return account

    def put_encoded(self, account_id: str, data: bytes | memoryview) -> None:
        """Hold an account as its encoding (`Account.encode`, or a snapshot's line `state_codec` checked)."""
        encoded = len(data)
        if encoded > _LENGTH_MASK:
            raise ValueError(f"an encoded account of {encoded} bytes")
        data = _COMPRESSOR.compress(data)
        length = len(data)
        old = self._where.pop(account_id, None)
        if old is not None:
            self._free.setdefault(slot_size(old & _LENGTH_MASK), []).append(old >> 64)
            self.cold_line_bytes -= _line_bytes(account_id, old >> 32 & _LENGTH_MASK)
        self.cold_line_bytes += _line_bytes(account_id, encoded)
        size = slot_size(length)
        free = None if self.holds else self._free.get(size)
        if free:
            start = free.pop()
            self._arena[start : start + length] = data
        else:
            start = len(self._arena)
            self._arena += data
            self._arena += bytes(size - length)
        self._where[account_id] = start << 64 | encoded << 32 | length

    def evict(self, lateness_us: int) -> None:
        """Encode the least recently used accounts beyond the hot limit (see `Account.encode`)."""
        for account_id in list(islice(self.hot, max(0, len(self.hot) - self.hot_limit))):
            self.put_encoded(account_id, self.hot.pop(account_id).encode(lateness_us))

    def encoded(self, lateness_us: int | None = None) -> Iterator[tuple[str, bytes | memoryview]]:
        """Every account's encoding: the hot ones encoded now (`Account.encode`), then `cold_encoded`."""
        for account_id, account in self.hot.items():
            yield account_id, account.encode(lateness_us)
        yield from self.cold_encoded()

    def cold_encoded(self) -> Iterator[tuple[str, bytes]]:
        """The encoded accounts, decompressed one at a time from the arena, which the store must not change
        meanwhile (the arena cannot grow while a view of it is held)."""
        view = memoryview(self._arena)
        decompress = _DECOMPRESSOR.decompress
        for account_id, place in self._where.items():
            start = place >> 64
            yield account_id, decompress(view[start : start + (place & _LENGTH_MASK)])

    @property
    def arena_bytes(self) -> int:
        return len(self._arena)

    def __len__(self) -> int:
        return len(self.hot) + len(self._where)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self.hot or account_id in self._where

    def __iter__(self) -> Iterator[str]:
        yield from self.hot
        yield from self._where


_LENGTH_MASK: Final = 2**32 - 1
# Level 3 (zstd's default): on encoded accounts level 1 was neither faster nor smaller. One context each,
# reused: a store is used by one thread (a forked copy gets its own).
_COMPRESSOR: Final = zstandard.ZstdCompressor(level=3)
_DECOMPRESSOR: Final = zstandard.ZstdDecompressor()


def _line_bytes(account_id: str, length: int) -> int:
    """What an encoded account takes in a snapshot: its id's JSON line, its own, and their two line breaks."""
    return len(orjson.dumps(account_id)) + length + 2


def slot_size(length: int) -> int:
    """The arena slot for an encoding of `length` bytes: rounded up to a multiple of an eighth of the power of two
    below it (at least 16)."""
    step = max(16, (1 << (length.bit_length() - 1)) >> 3) if length else 16
    return -(-length // step) * step


@dataclass(slots=True)
class Entity:
    """A lead or an opportunity: its events in applied order, and its contribution as last applied."""

    events: Timeline = field(default_factory=list)
    applied: Contribution | None = field(default=None, compare=False)
    # An opportunity's replay state after its last event, with `applied`: what an event later than all the
    # others adds is computed from it alone (`Engine._append_opportunity`).
    tail: OpportunityTail | None = field(default=None, compare=False)

    def first(self, event_type: str) -> tuple[int, int, Event] | None:
        return next((item for item in self.events if item[2].type == event_type), None)


@dataclass(slots=True)
class Unit:
    """One entity's contribution: computed from its events; `holder` keeps the one last applied, if it can.
    `key` names the contribution, so that a batch recomputes it once."""

    key: tuple[str, object]
    compute: Callable[[], Contribution]
    holder: Account | Entity | None = None

    def before(self) -> Contribution:
        applied = self.holder.applied if self.holder is not None else None
        return applied if applied is not None else self.compute()

    def after(self) -> Contribution:
        contribution = self.compute()
        if self.holder is not None:
            self.holder.applied = contribution
        return contribution


@dataclass(frozen=True)
class EngineConfig:
    allowed_lateness_us: int = 7 * 86_400 * US_PER_SECOND
    hot_accounts: int = 10_000  # accounts kept as objects between batches (per engine, i.e. per shard)
    history_days: int = 400  # midnights kept in the history (SPEC §5); 0 keeps none


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.ledger = LiveCells()
        self.accounts = AccountStore(self.config.hot_accounts)
        self.channels: dict[str, Keyed] = {}  # marketing's routing keys
        self.leads: dict[str, Entity] = {}
        self.opportunities: dict[str, Entity] = {}
        self.lead_opportunities: dict[str, set[str]] = {}  # lead id -> opportunities that name it
        self.watermark: int | None = None
        self.segments_seen: set[str] = set()
        self.sequence = 0
        # Units changed in this batch, with their contribution before its first change (see `_change`).
        self.pending: dict[tuple[str, object], tuple[Unit, Contribution]] = {}
        self.folded_at: int | None = None  # the hour the ledger's cells were last folded before
        # Product events before this are forgotten as their account is touched (see `end_batch`).
        self.fold_before = _NO_HORIZON
        # History points (`history`): cells of their own, so that capturing one scans only the live cells.
        self.history = PointCells()
        # The midnights (µs) this shard has points for: from its first event's (or an earlier event's) to the
        # latest its watermark has passed.
        self.history_from: int | None = None
        self.history_until: int | None = None
        self.history_finals = history.Finals()  # the points no longer kept here (see `finalize_history`)
        self.topic_latest: dict[str, int] = {}  # input topic -> the latest occurred_at accepted from it

    # Snapshots hold the attributes `state_codec.ENGINE_FIELDS` lists, as data: a new attribute is added there.

    # -- intake ------------------------------------------------------------------------------------------------

    def accept(self, topic: str, event: Event) -> str:
        """Apply one valid event; returns its outcome: `accepted`, `duplicate` or `late`."""
        keyed = self._keyed(event)
        latest = keyed.latest.get(topic)
        lateness = self.config.allowed_lateness_us
        if latest is not None and event.t < latest - lateness:
            return "late"
        # An id is remembered while its event is within the allowed lateness of the key's latest on the topic.
        ids = keyed.ids.get(topic)
        if ids is None:
            ids = keyed.ids[topic] = {}
        seen = ids.get(event.event_id)
        if seen is not None and latest is not None and seen >= latest - lateness:
            return "duplicate"
        if latest is None or event.t > latest:
            keyed.latest[topic] = latest = event.t
        ids[event.event_id] = event.t
        if len(ids) >= _FORGET_AT and len(ids) >= 2 * keyed.kept.get(topic, 0):
            keyed.forget(topic, ids, latest - lateness)
        if event.t > self.topic_latest.get(topic, _NO_HORIZON):
            self.topic_latest[topic] = event.t
        if self.watermark is None or event.t > self.watermark:
            self._pass_midnights(event.t)
            self.watermark = event.t
        self.sequence += 1
        stamp = (event.t, self.sequence)
        if self.history_until is not None and event.t <= self.history_until:
            self._revise_history(event, stamp, keyed)
            if self.history_from is not None and event.t < self.history_from:
                self._extend_history(event.t)
        else:
            self._apply(event, stamp, keyed)
        return "accepted"

    def _keyed(self, event: Event) -> Keyed:
        if event.type == "marketing.spend":
            channel = event.channel or ""
            keyed = self.channels.get(channel)
            if keyed is None:
                keyed = self.channels[channel] = Keyed()
            return keyed
        account_id = event.account_id or ""
        return self.accounts.get(account_id) or self.accounts.add(account_id)

    def end_batch(self) -> None:
        """Between batches: bring the ledger up to date, fold its cells older than every window once a week, then
        encode the accounts least recently used beyond the hot limit."""
        self.flush()
        horizon = self._horizon()
        if horizon is not None:
            # An account's product events older than every window (SPEC §2: watermark − 90 d − allowed lateness)
            # are forgotten when it is next touched: their flows sit in slices no window reads, a segment change
            # before them moves nothing a window reads, and what they leave (the latest active slices, the first
            # trial) is kept apart. So an account keeps about 97 days of product events, however long its history.
            self.fold_before = horizon
            hour = horizon // HOUR_US
            hour -= hour % _FOLD_EVERY_HOURS  # on whole weeks since the epoch, whatever the batches were
            if self.folded_at is None or hour > self.folded_at:
                self.ledger.fold(hour)
                self.folded_at = hour
        self.accounts.evict(self.config.allowed_lateness_us)

    def flush(self) -> None:
        """Apply to the ledger, once each, the change of every contribution the batch changed."""
        pending, self.pending = self.pending, {}
        for unit, before in pending.values():
            self.ledger.apply(before, unit.after())

    def _apply(self, event: Event, stamp: Stamp, keyed: Keyed) -> None:
        """`keyed` is the event's routing-key state from `_keyed`: its account, or for spend its channel."""
        if event.type == "marketing.spend":
            # Spend belongs to no account: only its own segment, else only `all`.
            hour = event.t // HOUR_US
            if event.segment is not None:
                self.segments_seen.add(event.segment)
                self.ledger.add((MARKETING_SPEND, event.segment, hour), event.money or 0)
            self.ledger.add((MARKETING_SPEND, "all", hour), event.money or 0)
            return
        account = keyed
        assert isinstance(account, Account), "every event but spend is keyed by its account"
        self._forget_product(account)
        if event.segment is not None:
            self._learn_segment(account, stamp, event.segment)
        self.segments_seen.add(account.segment_at(stamp))
        family = event.type.partition(".")[0]
        if family == "subscription":
            self._add_billing(account, stamp, event)
        elif family == "product":
            self._add_product(account, stamp, event.type)
        elif family == "lead":
            self._add_lead(account, stamp, event)
        elif family == "opportunity":
            self._add_opportunity(account, stamp, event)

    def _change(self, units: list[Unit], mutate: Callable[[], object]) -> None:
        """Apply `mutate`; the ledger moves by the change it makes to each unit's contribution at `flush`.

        Every change to what a contribution depends on goes through here, so a unit's contribution before its
        first change in the batch is the one last applied (held by the entity, or recomputed now), and its
        contribution after is computed once, at the end of the batch."""
        pending = self.pending
        for unit in units:
            if unit.key not in pending:
                pending[unit.key] = (unit, unit.before())
        mutate()

    def _learn_segment(self, account: Account, stamp: Stamp, segment: str) -> None:
        def insert() -> None:
            i = bisect_right(account.segment_stamps, stamp)
            account.segment_stamps.insert(i, stamp)
            account.segment_values.insert(i, segment)
            self._fold_segments(account)

        if account.segment_at(stamp) == segment:
            insert()  # the point changes no event's segment, nor the latest
            return
        # Events after this point, and the account's state, may now belong to another segment.
        units = [self._billing(account), self._product(account)]
        units += [self._lead(lead_id) for lead_id in account.leads]
        units += [self._opportunity(opportunity_id) for opportunity_id in account.opportunities]
        self._change(units, insert)

    # -- units: each recomputes one entity's contribution ------------------------------------------------------

    def _billing(self, account: Account) -> Unit:
        def compute() -> Contribution:
            if not account.billing:
                account.billing_tail = None
                return {}
            contribution, account.billing_tail = billing_contribution(account)
            return contribution

        return Unit(("billing", id(account)), compute, account)

    def _product(self, account: Account) -> Unit:
        # Product events move the ledger incrementally (`product_delta`): nothing applied to remember. A full
        # recompute also re-derives the latest active slices the increments start from.
        def compute() -> Contribution:
            contribution, account.last_active = product_contribution(account)
            return contribution

        return Unit(("product", id(account)), compute)

    def _lead(self, lead_id: str) -> Unit:
        lead = self.leads[lead_id]
        return Unit(("lead", lead_id), lambda: lead_contribution(lead, self._account), lead)

    def _opportunity(self, opportunity_id: str) -> Unit:
        opportunity = self.opportunities[opportunity_id]

        def compute() -> Contribution:
            contribution, opportunity.tail = opportunity_contribution(opportunity, self._account, self.leads.get)
            return contribution

        return Unit(("opportunity", opportunity_id), compute, opportunity)

    # -- accounts: billing and product ------------------------------------------------------------------------

    def _add_billing(self, account: Account, stamp: Stamp, event: Event) -> None:
        if len(account.billing) > 2 and account.billing[1][0] < self._state_horizon():
            self._fold_billing(account)
        tail = account.billing_tail
        if ("billing", id(account)) in self.pending:
            self._change([self._billing(account)], lambda: insort(account.billing, (*stamp, event)))
        elif event.type == "subscription.renewed" and event.money is None:
            # A renewal without a price moves no MRR and no step of t0, wherever it falls: its whole effect is one
            # renewal in its slice (and a breakpoint that repeats the values before it).
            if tail is not None and (not account.billing or account.billing[-1][:2] < stamp):
                _billing_event({}, tail, stamp, event, "", None)
            else:
                account.billing_tail = None
            insort(account.billing, (*stamp, event))
            delta: Contribution = {}
            add(delta, RENEWED, account.segment_at(stamp), stamp[0] // HOUR_US, 1)
            self._apply_delta(account, delta)
        elif tail is not None and account.applied is not None and account.billing[-1][:2] < stamp:
            # Later than every billing event: its flows and the state it leaves, from the state before it. The
            # steps are recomputed from the slice ends (one per hour with billing), not from every event.
            latest = account.latest_segment
            delta = {}
            _billing_state(delta, tail, latest)
            delta = {key: -amount for key, amount in delta.items()}
            _billing_event(delta, tail, stamp, event, account.segment_at(stamp), account.first_trial)
            _billing_state(delta, tail, latest)
            account.billing.append((*stamp, event))
            self._apply_delta(account, delta)
        else:
            self._change([self._billing(account)], lambda: insort(account.billing, (*stamp, event)))

    def _add_product(self, account: Account, stamp: Stamp, event_type: str) -> None:
        if event_type == "product.trial_started" and (account.first_trial is None or stamp < account.first_trial):

            def first_trial() -> None:
                account.first_trial = stamp

            self._change([self._billing(account)], first_trial)
        # The sequence orders an event only against segment points of its own time: one that arrives later has a
        # higher sequence than any event here, so 0 ranks the same unless a point of that time is already there.
        # A 0 costs nothing to hold and to encode (`product_codec`).
        t = stamp[0]
        stamps = account.segment_stamps
        i = bisect_left(stamps, (t,))
        insort(account.product, (t, stamp[1] if i < len(stamps) and stamps[i][0] == t else 0, event_type))
        if ("product", id(account)) in self.pending:
            return  # the batch recomputes the account's product contribution anyway
        # Each product event's flow stands alone, and the latest active slice only moves forward: no recompute.
        for key, amount in product_delta(account, stamp, event_type, account.last_active).items():
            self.ledger.add(key, amount)

    def _horizon(self) -> int | None:
        """Events before this are older than every window (SPEC §2: watermark − 90 d − allowed lateness). While a
        history is kept, "watermark" is that of the input topic read furthest behind (among those within a longest
        window of the watermark): its events still to come revise points whose windows reach back that far."""
        if self.watermark is None:
            return None
        progress = self.watermark
        if self.config.history_days > 0:
            floor = self.watermark - LONGEST_WINDOW_HOURS * HOUR_US
            progress = min((t for t in self.topic_latest.values() if t >= floor), default=progress)
        return progress - LONGEST_WINDOW_HOURS * HOUR_US - self.config.allowed_lateness_us

    def _state_horizon(self) -> int:
        """Billing events, segment points, leads' and opportunities' events are forgotten before this: every
        window's horizon, or while a history is kept one longest window earlier, because a point not yet final
        reads the state at the start of its own windows."""
        horizon = self._horizon()
        if horizon is None:
            return _NO_HORIZON
        return horizon - (LONGEST_WINDOW_HOURS * HOUR_US if self.config.history_days > 0 else 0)

    def _fold_entity(self, entity: Entity, lasting: Callable[[Event], bool]) -> None:
        """Forget a lead's or an opportunity's events older than every window but those whose state lasts: the
        first creation, the last event that set what `lasting` names, and the last event. The others' flows sit
        in slices no window reads; the replay of what is kept leaves the same state."""
        horizon = self._state_horizon()
        events = entity.events
        if len(events) < 3 or events[1][0] >= horizon:
            return
        cut = bisect_left(events, (horizon,))
        old = events[:cut]
        keep = {id(item) for item in (_first(old, "created"), _last(old, lasting), old[-1]) if item is not None}
        if len(keep) < cut:
            events[:cut] = [item for item in old if id(item) in keep]

    def _fold_billing(self, account: Account) -> None:
        """Forget the account's billing events older than every window, keeping where they left it: its
        subscriptions' MRR, its recorded MRR, whether it paid before, its last churn and the MRR after the last
        forgotten slice (the one step of t0 they still decide). Their flows sit in slices no window reads, and
        every step's prefix sum from the horizon on is unchanged."""
        billing = account.billing
        # The last event stays: its stamp is what later events are compared with.
        cut = min(bisect_left(billing, (self._state_horizon(),)), len(billing) - 1)
        if cut < 1:
            return
        state = _billing_start(account.billing_base)
        for t, seq, event in billing[:cut]:
            _billing_event({}, state, (t, seq), event, "", None)
        hour, mrr = state.end_of_slice[-1]
        account.billing_base = (state.subscriptions, state.recorded, state.paid_before, state.last_churn, hour, mrr)
        del billing[:cut]
        tail = account.billing_tail
        if tail is not None:
            tail.end_of_slice = [(hour, mrr)] + [item for item in tail.end_of_slice if item[0] > hour]
        if account.applied is not None:
            # What the incremental path added for the forgotten events: into their last slice, as one cell per
            # quantity and segment. Every window and every kept point starts after it, so none reads the move.
            fold(account.applied, hour + 1)

    def _fold_segments(self, account: Account) -> None:
        """Collapse the account's segment points older than every window into the one in force there: a point
        only decides the segment of events after it, and events that old count only in slices no window reads
        (state is grouped by the latest segment)."""
        before = bisect_left(account.segment_stamps, (self._state_horizon(),))
        if before > 1:
            del account.segment_stamps[: before - 1]
            del account.segment_values[: before - 1]

    # -- leads and opportunities -------------------------------------------------------------------------------

    def _add_lead(self, account: Account, stamp: Stamp, event: Event) -> None:
        lead_id = event.entity_id or ""
        lead = self.leads.get(lead_id)
        if lead is None:
            lead = self.leads[lead_id] = Entity()
        if lead_id not in account.leads:
            account.leads += (lead_id,)
        self._fold_entity(lead, lambda event: False)
        units = [self._lead(lead_id)]
        if event.type == "lead.created":
            first_created = lead.first("lead.created")
            if first_created is None or stamp < first_created[:2]:
                # The lead's creation moves: the time to close of opportunities naming it may change.
                units += [self._opportunity(o) for o in self.lead_opportunities.get(lead_id, ())]
        if len(units) == 1 and self._appends(lead, ("lead", lead_id), stamp, event):
            self._append_lead(lead, stamp, event)
            return
        self._change(units, lambda: insort(lead.events, (*stamp, event)))

    def _appends(self, entity: Entity, key: tuple[str, str], stamp: Stamp, event: Event) -> bool:
        """Whether `event` comes after all of the entity's events, of the same account, with the contribution it
        holds current: then what it adds depends on that contribution and the event alone."""
        if entity.applied is None or not entity.events or key in self.pending:
            return False
        last = entity.events[-1]
        return last[:2] < stamp and last[2].account_id == event.account_id

    def _append_lead(self, lead: Entity, stamp: Stamp, event: Event) -> None:
        """A lead's event later than all its others: its funnel count, and the lead moving to its stage."""
        assert lead.applied is not None
        account = self._account(event.account_id)
        delta: Contribution = {}
        latest = account.latest_segment
        add(delta, LEADS_IN_STAGE[_lead_stage(lead.events[-1][2])], latest, 0, -1)
        _lead_event(delta, event, account.segment_at(stamp), stamp[0] // HOUR_US)
        add(delta, LEADS_IN_STAGE[_lead_stage(event)], latest, 0, 1)
        lead.events.append((*stamp, event))
        self._apply_delta(lead, delta)

    def _apply_delta(self, holder: Account | Entity, delta: Contribution) -> None:
        """Move the ledger, and the contribution `holder` keeps if it keeps one, by `delta`."""
        applied = holder.applied
        for key, amount in delta.items():
            if amount:
                self.ledger.add(key, amount)
                if applied is not None:
                    total = applied.get(key, 0) + amount
                    if total:
                        applied[key] = total
                    else:
                        applied.pop(key, None)

    def _add_opportunity(self, account: Account, stamp: Stamp, event: Event) -> None:
        opportunity_id = event.entity_id or ""
        opportunity = self.opportunities.get(opportunity_id)
        if opportunity is None:
            opportunity = self.opportunities[opportunity_id] = Entity()
        if opportunity_id not in account.opportunities:
            account.opportunities += (opportunity_id,)
        if event.lead_id is not None:
            self.lead_opportunities.setdefault(event.lead_id, set()).add(opportunity_id)
        self._fold_entity(opportunity, _sets_amount)
        key = ("opportunity", opportunity_id)
        if opportunity.tail is not None and self._appends(opportunity, key, stamp, event):
            self._append_opportunity(opportunity, opportunity.tail, stamp, event)
            return
        self._change([self._opportunity(opportunity_id)], lambda: insort(opportunity.events, (*stamp, event)))

    def _append_opportunity(self, opportunity: Entity, tail: OpportunityTail, stamp: Stamp, event: Event) -> None:
        """An opportunity's event later than all its others: its own flows, and the open state it leaves."""
        account = self._account(event.account_id)
        latest = account.latest_segment
        delta: Contribution = {}
        _open_cells(delta, tail, latest, -1)
        _opportunity_event(delta, tail, stamp, event, account.segment_at(stamp), self.leads.get)
        _open_cells(delta, tail, latest, 1)
        opportunity.events.append((*stamp, event))
        self._apply_delta(opportunity, delta)

    def _account(self, account_id: str | None) -> Account:
        account = self.accounts.get(account_id or "")
        assert account is not None, "accept creates the account of every event it applies"
        return account

    # -- history (SPEC §5): a point per UTC midnight, see `history` -------------------------------------------

    def _pass_midnights(self, t: int) -> None:
        """The watermark moves to `t`: capture every midnight before it. Every event accepted so far is at or
        before those midnights, so the live cells are the state at each of them."""
        days = self.config.history_days
        if days <= 0:
            return
        if self.history_until is None:
            self.history_until = (t - 1) // history.DAY_US * history.DAY_US  # no point before the first event
            self.history_from = self.history_until + history.DAY_US
            return
        captured = history.midnights(max(self.history_until, t - 1 - days * history.DAY_US), t - 1)
        if not captured:
            return
        self.flush()
        points = self.history
        seen = [segment for segment in history.SEEN_SEGMENTS if segment in self.segments_seen]
        for day in captured:
            self._store_point(day, history.capture(self.ledger, day), seen)
        self.history_until = captured[-1]
        # Points past the kept days go in one pass every 30th day (since the epoch): a pass reads every point.
        if any(day // history.DAY_US % 30 == 0 for day in captured):
            cutoff = history.midnight_hour(self.history_until) - days * 24
            for key in points.through(cutoff):
                points.add(key, -points.values[key])
            # Final points' cells are gone from here but not from a compacted partials topic: zeros delete them.
            points.touched.update(self.history_finals.cut_before(cutoff))

    def finalize_history(self) -> None:
        """Drop the cells of the points that became final (SPEC §5: older than watermark − 90 d − allowed
        lateness), once `FINAL_STEP_DAYS` of them are due: call it after their cells were published."""
        horizon = self._horizon()
        if horizon is None or self.config.history_days <= 0:
            return
        hour = horizon // history.DAY_US * 24  # the last midnight at or before the horizon
        if hour >= self.history_finals.hour + history.FINAL_STEP_DAYS * 24:
            self.history_finals.finalize(self.history, hour)

    def _revise_history(self, event: Event, stamp: Stamp, keyed: Keyed) -> None:
        """Apply an event at or before a captured midnight, and revise the points it falls before.

        At a midnight after every event of the entities the event touches, the state they leave is their live
        state, so the point moves by the change the event makes to the live cells. At a midnight before one of
        them, each entity's state at that midnight is computed before and after the event."""
        assert self.history_until is not None
        # Every kept point, even one older than SPEC §5's final horizon: an event that old is accepted only as
        # the first of its key, or when its topic is read far behind the others, and the point is then as known.
        kept = self.history_until - self.config.history_days * history.DAY_US
        days = history.midnights(max(event.t - 1, kept, (self.history_from or 0) - 1), self.history_until)
        if not days:
            self._apply(event, stamp, keyed)
            return
        slow: list[int] = []
        if isinstance(keyed, Account):
            account = keyed
            self._fold_account(account)
            units = self._units_of(account, stamp, event)
            latest = self._latest_of(account, *units)
            slow = [day for day in days if day < latest]
            before = [self._state_at([account], *units, day) for day in slow]
        self.flush()
        ledger = self.ledger
        ledger.recording = {}
        self._apply(event, stamp, keyed)
        self.flush()
        delta, ledger.recording = ledger.recording, None
        changes = [history.state_at(delta.items(), day) for day in days[len(slow) :]]
        if slow:
            after = [self._state_at([account], *units, day) for day in slow]
            changes[:0] = [history.difference(now, was) for now, was in zip(after, before, strict=True)]
        segment = account.segment_at(stamp) if isinstance(keyed, Account) else (event.segment or "all")
        points, where = self.history, self.history_finals.key
        for day, change in zip(days, changes, strict=True):
            for key, amount in change.items():
                points.add(where(key), amount)
            if segment in history.SEEN_SEGMENTS:
                key = where((history.SEEN, segment, history.midnight_hour(day)))
                if not points.values.get(key):
                    points.add(key, 1)

    def _units_of(self, account: Account, stamp: Stamp, event: Event) -> tuple[bool, bool, set[str], set[str]]:
        """What an event of the account can change (see `_apply`): its billing, its product, which leads and which
        opportunities; a segment point that moves events to another segment changes all of the account's."""
        family = event.type.partition(".")[0]
        entity = event.entity_id or ""
        leads: set[str] = set()
        opportunities: set[str] = set()
        if family == "lead":
            leads.add(entity)
            opportunities |= self.lead_opportunities.get(entity, set())
        elif family == "opportunity":
            opportunities.add(entity)
        billing = family == "subscription" or event.type == "product.trial_started"
        product = family == "product"
        if event.segment is not None and account.segment_at(stamp) != event.segment:
            billing = product = True
            leads.update(account.leads)
            opportunities.update(account.opportunities)
        return billing, product, leads, opportunities

    def _latest_of(
        self, account: Account, billing: bool, product: bool, leads: set[str], opportunities: set[str]
    ) -> int:
        """The latest occurred_at among the events of those entities and the account's segment points (state is
        grouped by the latest segment at each midnight)."""
        times = [account.segment_stamps[-1][0]] if account.segment_stamps else []
        if billing and account.billing:
            times.append(account.billing[-1][0])
        if product and account.product:
            times.append(account.product[-1][0])
        for entities, ids in ((self.leads, leads), (self.opportunities, opportunities)):
            for entity_id in ids:
                entity = entities.get(entity_id)
                if entity is not None and entity.events:
                    times.append(entity.events[-1][0])
        return max(times, default=_NO_HORIZON)

    def _forget_product(self, account: Account) -> None:
        """Forget the account's product events older than every window (see `end_batch`)."""
        product = account.product
        if not product or product[0][0] >= self.fold_before:
            return
        cut = bisect_left(product, (self.fold_before,))
        if self.config.history_days > 0:
            latest = dict(account.active_before or {})
            for t, seq, _ in product[:cut]:
                hour = t // HOUR_US
                for segment in (account.segment_at((t, seq)), "all"):
                    if latest.get(segment, hour) <= hour:
                        latest[segment] = hour
            account.active_before = latest
        del product[:cut]

    def _fold_account(self, account: Account) -> None:
        """Forget now what the account's next events would forget (see `_apply` and the `_add_*`), so that
        forgetting does not show in a difference of states taken around one event."""
        self._forget_product(account)
        if len(account.billing) > 2 and account.billing[1][0] < self._state_horizon():
            self._fold_billing(account)
        self._fold_segments(account)
        for lead_id in account.leads:
            self._fold_entity(self.leads[lead_id], lambda event: False)
        for opportunity_id in account.opportunities:
            self._fold_entity(self.opportunities[opportunity_id], _sets_amount)

    def _extend_history(self, t: int) -> None:
        """An event before this shard's first point: the midnights from it on get points too, each the state of
        every entity of the shard at that midnight (an event that early is rare once the shard has started)."""
        assert self.history_from is not None
        kept = (self.history_until or 0) - self.config.history_days * history.DAY_US
        days = history.midnights(max(t - 1, kept), self.history_from - 1)
        if not days:
            return
        self.flush()
        accounts = [account for account_id in list(self.accounts) if (account := self.accounts.get(account_id))]
        # Flows from the live cells, which keep those of forgotten events; the rest from each entity's state.
        flows = [(key, value) for key, value in self.ledger.values.items() if key[0] in history.EVENT_FLOWS]
        for day in days:
            state = self._state_at(accounts, True, True, set(self.leads), set(self.opportunities), day)
            point = {key: value for key, value in state.items() if key[0] not in history.EVENT_FLOW_KEYS}
            point.update(history.state_at(flows, day))
            self._store_point(day, point, {key[1] for key in point} & set(history.SEEN_SEGMENTS))
        self.history_from = days[0]

    def _store_point(self, day: int, point: Contribution, seen: Collection[str]) -> None:
        """A midnight's first point, marked captured, with the segments seen by then."""
        hour = history.midnight_hour(day)
        point[(history.CAPTURED, "", hour)] = 1
        for segment in seen:
            point[(history.SEEN, segment, hour)] = 1
        # A new midnight: none of its cells exist yet, so they are set at once. It is final already only when it
        # comes before the shard's first point (`_extend_history`).
        if hour <= self.history_finals.hour:
            where = self.history_finals.key
            point = {where(key): value for key, value in point.items()}
        self.history.values.update(point)
        self.history.touched.update(point)

    def _state_at(
        self,
        accounts: list[Account],
        billing: bool,
        product: bool,
        leads: set[str],
        opportunities: set[str],
        day: int,
    ) -> Contribution:
        """What the accounts' billing and product (if asked), and the given leads and opportunities, contribute
        to the point at midnight `day`: their contributions over their events at or before it, as `history`
        cells."""
        views: dict[int, Account] = {}  # by the account object's id: the store hands out one object per account

        def account_at(account_id: str | None) -> Account:
            holder = self._account(account_id)
            view = views.get(id(holder))
            if view is None:
                view = views[id(holder)] = _account_at(holder, day)
            return view

        def lead_at(lead_id: str) -> Entity | None:
            lead = self.leads.get(lead_id)
            return None if lead is None else _entity_at(lead, day)

        parts: list[Contribution] = []
        for account in accounts:
            own = views[id(account)] = _account_at(account, day)
            if billing and (own.billing or own.billing_base is not None):
                parts.append(billing_contribution(own)[0])
            if product:
                parts.append(product_contribution(own)[0])
        for lead_id in leads:
            lead = lead_at(lead_id)
            if lead is not None:
                parts.append(lead_contribution(lead, account_at))
        for opportunity_id in opportunities:
            opportunity = self.opportunities.get(opportunity_id)
            if opportunity is not None:
                parts.append(opportunity_contribution(_entity_at(opportunity, day), account_at, lead_at)[0])
        return history.state_at((item for part in parts for item in part.items()), day)


# -- contributions: pure functions of one entity's events ------------------------------------------------------


def _account_at(account: Account, day: int) -> Account:
    """The account as its events at or before `day` leave it (its billing base is older than any point kept)."""
    end = (day + 1,)
    cut = bisect_left(account.segment_stamps, end)
    first_trial = account.first_trial
    return Account(
        segment_stamps=account.segment_stamps[:cut],
        segment_values=account.segment_values[:cut],
        billing=account.billing[: bisect_left(account.billing, end)],
        first_trial=first_trial if first_trial is not None and first_trial[0] <= day else None,
        product=account.product[: bisect_left(account.product, end)],
        billing_base=account.billing_base,
        active_before=account.active_before,
    )


def _entity_at(entity: Entity, day: int) -> Entity:
    return Entity(events=entity.events[: bisect_left(entity.events, (day + 1,))])


@dataclass(slots=True)
class BillingTail:
    """Where replaying an account's billing events leaves it."""

    subscriptions: dict[str, int] = field(default_factory=dict)
    recorded: int = 0  # the customer's MRR; it changes only with a movement
    paid_before: bool = False
    end_of_slice: list[tuple[int, int]] = field(default_factory=list)  # (slice, recorded MRR after its events)
    last_churn: int | None = None


def billing_contribution(account: Account) -> tuple[Contribution, BillingTail]:
    """Movements (flows, by event segment) and the MRR step functions of t0 (by latest segment); and the state
    the account's billing leaves."""
    out: Contribution = {}
    tail = _billing_start(account.billing_base)
    for t, seq, event in account.billing:
        _billing_event(out, tail, (t, seq), event, account.segment_at((t, seq)), account.first_trial)
    _billing_state(out, tail, account.latest_segment)
    return out, tail


def _billing_start(base: tuple[dict[str, int], int, bool, int | None, int, int] | None) -> BillingTail:
    """The replay state an account's kept billing events start from: empty, or where the forgotten ones left it."""
    if base is None:
        return BillingTail()
    subscriptions, recorded, paid_before, last_churn, hour, mrr = base
    return BillingTail(dict(subscriptions), recorded, paid_before, [(hour, mrr)], last_churn)


def _billing_event(
    out: Contribution, tail: BillingTail, stamp: Stamp, event: Event, segment: str, first_trial: Stamp | None
) -> None:
    """One billing event's flows, in order after those before it; moves `tail` past it."""
    hour = stamp[0] // HOUR_US
    subscriptions = tail.subscriptions
    sub_id = event.entity_id or ""
    if event.type == "subscription.canceled":
        subscriptions[sub_id] = 0
        add(out, CANCELED, segment, hour, 1)
    else:
        if event.money is not None:
            subscriptions[sub_id] = event.money
        if event.type == "subscription.renewed":
            add(out, RENEWED, segment, hour, 1)
    mrr = sum(subscriptions.values())
    if mrr < HALF_CENT:
        mrr = 0
    recorded = tail.recorded
    if abs(mrr - recorded) >= HALF_CENT:
        kind = movement_kind(recorded, mrr, tail.paid_before)
        add(out, MOVEMENT[kind], segment, hour, abs(mrr - recorded))
        if kind == "new":
            add(out, NEW_CUSTOMERS, segment, hour, 1)
            if first_trial is not None and first_trial < stamp:
                add(out, TRIAL_CONVERSIONS, segment, hour, 1)
        elif kind == "churn":
            tail.last_churn = hour
        tail.paid_before = tail.paid_before or mrr > 0
        tail.recorded = recorded = mrr
    end_of_slice = tail.end_of_slice
    if end_of_slice and end_of_slice[-1][0] == hour:
        end_of_slice[-1] = (hour, recorded)
    else:
        end_of_slice.append((hour, recorded))


def _billing_state(out: Contribution, tail: BillingTail, latest: str) -> None:
    """The account's MRR now and the step functions of t0 its billing leaves, in its latest segment."""
    recorded, last_churn = tail.recorded, tail.last_churn
    add(out, MRR_NOW, latest, 0, recorded)
    add(out, CUSTOMERS_NOW, latest, 0, int(recorded > 0))
    # MRR at t0 is the MRR after the last slice before t0, so each slice end is a breakpoint at slice + 1.
    previous = (0, 0, 0, 0, 0)
    for hour, mrr in tail.end_of_slice:
        t0 = hour + 1
        in_c0 = mrr > 0
        values = (
            mrr,
            int(in_c0),
            recorded if in_c0 else 0,
            min(recorded, mrr),
            int(in_c0 and last_churn is not None and last_churn >= t0),
        )
        for quantity, value, before in zip(_STEP_QUANTITIES, values, previous, strict=True):
            if value != before:
                add(out, quantity, latest, t0, value - before)
        previous = values


_STEP_QUANTITIES: Final = (MRR_AT_T0, C0_CUSTOMERS, C0_MRR_NOW, C0_MRR_RETAINED, C0_CHURNED)


def movement_kind(before: int, after: int, paid_before: bool) -> str:
    """SPEC §4: the kind of a change of a customer's MRR from `before` to `after` (they differ)."""
    if before == 0:
        return "reactivation" if paid_before else "new"
    if after == 0:
        return "churn"
    return "expansion" if after > before else "contraction"


def product_delta(account: Account, stamp: Stamp, event_type: str, last_active: dict[str, int]) -> Contribution:
    """What one product event adds: its own flow, and a move of the account's latest active slice if later.

    Updates `last_active` (segment, and "all" -> latest active slice); the delta may hold −1 for the slice the
    account leaves.
    """
    hour = stamp[0] // HOUR_US
    segment = account.segment_at(stamp)
    out: Contribution = {}
    flow = _PRODUCT_FLOWS.get(event_type)
    if flow is not None:
        add(out, flow, segment, hour, 1)
    for seg in (segment, "all"):
        last = last_active.get(seg)
        if last is None or hour > last:
            if last is not None:
                out[(ACTIVE_ACCOUNTS, seg, last)] = -1
            last_active[seg] = hour
            out[(ACTIVE_ACCOUNTS, seg, hour)] = 1
    return out


def product_contribution(account: Account) -> tuple[Contribution, dict[str, int]]:
    """All of an account's product events, and the latest active slice per segment they leave.

    The segment in force is constant between two segment points, so the latest active slice of each segment is
    found by one search per point, newest first: a segment change costs the flow events and the points, not a
    pass over every usage event."""
    out: Contribution = {}
    product = account.product
    for t, seq, event_type in product:
        flow = _PRODUCT_FLOWS.get(event_type)
        if flow is not None:
            add(out, flow, account.segment_at((t, seq)), t // HOUR_US, 1)
    last_active: dict[str, int] = {}
    if product:
        last_active["all"] = product[-1][0] // HOUR_US
        stamps, values = account.segment_stamps, account.segment_values
        end = len(product)  # the events before the piece being looked at
        for k in range(len(stamps), -1, -1):
            start = bisect_left(product, stamps[k - 1]) if k else 0
            if end > start:
                last_active.setdefault(values[k - 1] if k else "unknown", product[end - 1][0] // HOUR_US)
            end = min(end, start)
            if end == 0:
                break
    for segment, hour in (account.active_before or {}).items():
        last_active.setdefault(segment, hour)
    for segment, hour in last_active.items():
        out[(ACTIVE_ACCOUNTS, segment, hour)] = 1
    return out, last_active


def lead_contribution(lead: Entity, account: Callable[[str | None], Account]) -> Contribution:
    """Funnel counts (by event segment) and the lead's current stage (by its account's latest segment)."""
    out: Contribution = {}
    if not lead.events:
        return out
    for t, seq, event in lead.events:
        _lead_event(out, event, account(event.account_id).segment_at((t, seq)), t // HOUR_US)
    last = lead.events[-1][2]
    add(out, LEADS_IN_STAGE[_lead_stage(last)], account(last.account_id).latest_segment, 0, 1)
    return out


def _first(events: Timeline, kind: str) -> tuple[int, int, Event] | None:
    """The first `lead.created` / `opportunity.created` among `events`."""
    return next((item for item in events if item[2].type.endswith(kind)), None)


def _last(events: Timeline, chosen: Callable[[Event], bool]) -> tuple[int, int, Event] | None:
    return next((item for item in reversed(events) if chosen(item[2])), None)


def _sets_amount(event: Event) -> bool:
    """Whether an opportunity's event sets its last known amount (a creation always does, even to none)."""
    return event.type == "opportunity.created" or (event.type == "opportunity.won" and event.money is not None)


def _lead_event(out: Contribution, event: Event, segment: str, hour: int) -> None:
    if event.type == "lead.created":
        add(out, LEADS_CREATED, segment, hour, 1)
    elif event.stage == "mql":
        add(out, MQLS, segment, hour, 1)
    elif event.stage == "sql":
        add(out, SQLS, segment, hour, 1)


def _lead_stage(event: Event) -> str:
    stage = "lead" if event.type == "lead.created" else event.stage
    assert stage is not None, "the decoder gives every stage change its stage"
    return stage


@dataclass(slots=True)
class OpportunityTail:
    """Where replaying an opportunity's events leaves it."""

    created: tuple[int, int, Event] | None = None  # its first creation
    amount: int | None = None  # its last known amount
    is_open: bool = False


def opportunity_contribution(
    opportunity: Entity,
    account: Callable[[str | None], Account],
    lead: Callable[[str], Entity | None],
) -> tuple[Contribution, OpportunityTail]:
    """Replays one opportunity in order: creations, wins with amount and cycle times, losses, and open state;
    and the state it leaves."""
    out: Contribution = {}
    tail = OpportunityTail()
    for t, seq, event in opportunity.events:
        _opportunity_event(out, tail, (t, seq), event, account(event.account_id).segment_at((t, seq)), lead)
    if opportunity.events:
        _open_cells(out, tail, account(opportunity.events[-1][2].account_id).latest_segment, 1)
    return out, tail


def _opportunity_event(
    out: Contribution,
    tail: OpportunityTail,
    stamp: Stamp,
    event: Event,
    segment: str,
    lead: Callable[[str], Entity | None],
) -> None:
    t = stamp[0]
    hour = t // HOUR_US
    if event.type == "opportunity.created":
        add(out, OPPORTUNITIES_CREATED, segment, hour, 1)
        tail.created = tail.created or (*stamp, event)
        tail.amount = event.money
        tail.is_open = True
        return
    tail.is_open = False
    if event.type == "opportunity.lost":
        add(out, DEALS_LOST, segment, hour, 1)
        return
    if event.money is not None:
        tail.amount = event.money
    add(out, DEALS_WON, segment, hour, 1)
    add(out, WON_AMOUNT, segment, hour, tail.amount or 0)
    created = tail.created
    if created is None:
        return
    add(out, SALES_CYCLE_SUM, segment, hour, t - created[0])
    add(out, SALES_CYCLE_COUNT, segment, hour, 1)
    lead_id = created[2].lead_id
    source = lead(lead_id) if lead_id is not None else None
    lead_created = source.first("lead.created") if source is not None else None
    if lead_created is not None and lead_created[:2] < stamp:
        add(out, TIME_TO_CLOSE_SUM, segment, hour, t - lead_created[0])
        add(out, TIME_TO_CLOSE_COUNT, segment, hour, 1)


def _open_cells(out: Contribution, tail: OpportunityTail, segment: str, sign: int) -> None:
    if tail.is_open:
        add(out, OPEN_OPPORTUNITIES, segment, 0, sign)
        add(out, OPEN_PIPELINE_AMOUNT, segment, 0, sign * (tail.amount or 0))
