"""Delivery: the time-ordered stream with late deliveries and duplicates; :func:`generate` and :func:`live`."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from revpulse.synth.config import DAY, HOUR, MINUTE, SynthConfig, to_ms
from revpulse.synth.simulation import Simulation

_LATE_MIN = MINUTE  # shortest delay of a late delivery
_LATE_MAX = 3 * DAY - HOUR  # longest delay: lateness always stays under 3 days of event time


def _deliver(sim: Simulation, config: SynthConfig, limit: int | None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Delivery order: the time-ordered stream, with some events held back (late) and some re-sent (duplicates).

    A late event is held for 1 minute to 3 days - 1 hour (log-uniform) of event time and released just before
    the first event whose time reaches its release time, once an event later than it has been delivered: it is
    always out of order, and its lateness (the largest ``occurred_at`` delivered before it minus its own) stays
    under 3 days. A duplicate is a copy of a delivered event re-sent at a random
    point before its own ``occurred_at`` + 3 days - 1 hour.
    """
    if limit is not None and limit <= 0:
        return
    rng = random.Random(f"revpulse-synth-delivery-{config.seed}")
    rand = rng.random
    late_p, dup_p = config.late_fraction, config.duplicate_fraction
    ratio = _LATE_MAX / _LATE_MIN
    held: list[tuple[int, int, str, dict[str, Any], bool, int]] = []  # release, seq, topic, event, dup, occurred
    seq = 0
    count = 0
    clock = sim.start_ms
    stop = limit if limit is not None else -1

    def resend(topic: str, ev: dict[str, Any], occurred: int) -> None:
        nonlocal seq
        seq += 1
        release = clock + int(rand() * max(0, occurred + _LATE_MAX - clock))
        heapq.heappush(held, (release, seq, topic, dict(ev), True, occurred))
        sim.dup_count += 1

    for ms, topic, ev in sim.events():
        while held and held[0][0] <= ms and held[0][5] < clock:  # after a later event was delivered
            _, _, h_topic, h_ev, is_dup, occurred = heapq.heappop(held)
            yield h_topic, h_ev
            count += 1
            if count == stop:
                return
            if not is_dup and dup_p and rand() < dup_p:
                resend(h_topic, h_ev, occurred)
        if late_p and rand() < late_p:
            seq += 1
            heapq.heappush(held, (ms + int(_LATE_MIN * ratio ** rand()), seq, topic, ev, False, ms))
            continue
        clock = ms
        yield topic, ev
        count += 1
        if count == stop:
            return
        if dup_p and rand() < dup_p:
            resend(topic, ev, ms)
    while held:
        _, _, h_topic, h_ev, is_dup, occurred = heapq.heappop(held)
        yield h_topic, h_ev
        count += 1
        if count == stop:
            return
        if not is_dup and dup_p and rand() < dup_p:
            resend(h_topic, h_ev, occurred)


def generate(config: SynthConfig, *, events: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(topic, event) in delivery order over ``[config.start, config.start + config.days)``.

    Deterministic for a given ``(config, events)``. Without ``events`` the volume is the business's natural one
    and the stream ends with the time span. With ``events=N`` the usage volume adapts so that exactly N events
    (duplicates included) are delivered and they span the whole range (if the business's non-usage events alone
    exceed N, the stream simply stops after N). Memory stays bounded: one day of non-usage events, one hour of
    usage and the held-back late/duplicate events.
    """
    if events is not None and events < 0:
        raise ValueError("events must be >= 0")
    sim = Simulation(
        config,
        start_ms=to_ms(config.start),
        days=config.days,
        id_prefix=f"ev{config.seed}-",
        target=events,
    )
    return _deliver(sim, config, events)


def live(
    config: SynthConfig,
    *,
    rate: float,
    now: Callable[[], datetime],
    backfill_days: int = 30,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Endless stream for the demo: a history backfill ending at ``now()``, then events near wall-clock time.

    ``now()`` is read once, at the start (T0). The first part replays ``backfill_days`` days of business history
    before T0 at the natural volume (``config.start`` and ``config.days`` are ignored); after T0 the stream
    continues with event times advancing at about ``rate`` events per second (non-usage business events keep their
    own rate; usage fills up to ``rate``, flat over the day).

    **The caller paces**: the generator never sleeps. Before sending an event, wait ``seconds_until_due(event,
    now())`` (0 for the backfill and for late or duplicate re-sends, whose ``occurred_at`` is in the past). A
    caller that cannot keep up just falls behind wall-clock time. Event ids carry a per-run prefix (from T0) so
    that restarting the demo never produces ids that look like duplicates of a previous run.
    """
    if rate <= 0 or not math.isfinite(rate):
        raise ValueError("rate must be a positive number")
    if backfill_days < 0:
        raise ValueError("backfill_days must be >= 0")
    t0 = to_ms(now())
    t0 -= t0 % 1000
    sim = Simulation(
        config,
        start_ms=t0 - backfill_days * DAY,
        days=None,
        id_prefix=f"live{t0:x}-",
        realtime_day=backfill_days,
        rate=rate,
    )
    return _deliver(sim, config, None)
