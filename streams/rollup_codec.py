"""A rollup's checkpoint: its state and the partials-topic offsets it covers, sealed like a shard snapshot.

A restarting worker takes it from its data dir and reads the partials topic from those offsets on, instead of
from the start: the topic holds every value ever written where the broker compacts nothing, and every final
history point where it does. The bytes are as hostile as a snapshot's: checked throughout, a SnapshotError
saying why, never a rollup.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson

from revpulse.streams.history import BASE_OF, QUANTITIES_OF_HISTORY, is_history
from revpulse.streams.ledger import Key
from revpulse.streams.point_rows import PointRows
from revpulse.streams.quantities import QUANTITIES
from revpulse.streams.rollup import Rollup
from revpulse.streams.state_codec import (
    SnapshotError,
    _dumps,
    _fail,
    _int,
    _list,
    _map,
    _texts,
    cell_groups,
    cell_values,
    seal,
    unseal,
)

FORMAT: Final = "rollup-2"
# rollup-1 held the segments seen over all shards, not per shard: decoded, its rollup derives no shard's point
# from live cells with `other` or `unknown` seen (`Rollup.point`) until that shard reports them again.
_FORMATS: Final = frozenset({"rollup-1", FORMAT})
_KEYS: Final = frozenset(
    {"format", "positions", "watermarks", "segments_seen", "final", "cut", "captured", "partials", "points"}
)


def encode_rollup(rollup: Rollup, positions: dict[int, int], key: bytes | None = None) -> bytes:
    """`rollup` as it stands after reading the partials topic up to `positions` (partition -> next offset).

    Its cells are written a shard at a time, the points a (quantity, segment) at a time: held as objects all at
    once (a dict per shard, every kept point's cells), they took tens of MiB, at the top of the worker's memory
    while a long history was read, for a checkpoint of a few MiB."""
    head = _dumps(
        {
            "format": FORMAT,
            "positions": {str(partition): offset for partition, offset in positions.items()},
            "watermarks": {str(shard): watermark for shard, watermark in rollup.watermarks.items()},
            "segments_seen": {str(shard): sorted(segments) for shard, segments in rollup.shard_segments.items()},
            "final": {str(shard): hour for shard, hour in rollup.final.items()},
            "cut": rollup.cut,
            "captured": {str(shard): sorted(hours) for shard, hours in rollup.captured.items()},
        }
    )
    out = io.BytesIO()
    out.write(head[:-1])
    out.write(b',"partials":{')
    for n, shard in enumerate(sorted(rollup.partials.keys() | rollup.point_partials.keys())):
        out.write(b"," if n else b"")
        out.write(_dumps(str(shard)) + b":")
        _write_groups(out, _shard_groups(rollup, shard))
    out.write(b'},"points":')
    _write_groups(out, rollup.points.groups())
    out.write(b"}")
    return seal(out.getvalue(), key)


def _shard_groups(rollup: Rollup, shard: int) -> Iterator[object]:
    """A shard's cells as `cell_groups`: its live cells and overlays, then its cells of points (never the same
    (quantity, segment): `Rollup.update` keeps a quantity in one or the other)."""
    yield from cell_groups(rollup.partials.get(shard, {}))
    rows = rollup.point_partials.get(shard)
    if rows is not None:
        yield from rows.groups()


def _write_groups(out: io.BytesIO, groups: Iterable[object]) -> None:
    """The groups as a JSON list, each written as soon as it is encoded: orjson's output of even a few bytes
    holds a 4 KiB buffer or more, so a list of them would cost far more than the checkpoint."""
    out.write(b"[")
    for n, group in enumerate(groups):
        out.write(b"," if n else b"")
        out.write(_dumps(group))
    out.write(b"]")


def decode_rollup(blob: bytes, shards: int, partitions: int, key: bytes | None = None) -> tuple[Rollup, dict[int, int]]:
    """The rollup and the offsets a checkpoint holds, for `shards` shards and a partials topic of `partitions`."""
    try:
        body = orjson.loads(unseal(blob, key))
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"rollup checkpoint: not JSON ({exc})") from None
    body = _map(body, "rollup")
    if body.keys() != _KEYS or body["format"] not in _FORMATS:
        _fail("rollup", f"expected the keys {sorted(_KEYS)} of format {FORMAT}")
    positions = _numbered(body["positions"], "positions", partitions)
    if positions.keys() != set(range(partitions)) or min(positions.values(), default=0) < 0:
        _fail("positions", f"expected an offset for each of {partitions} partitions")
    rollup = Rollup()
    rollup.watermarks = _numbered(body["watermarks"], "watermarks", shards)
    seen = body["segments_seen"]
    if body["format"] == "rollup-1":
        rollup.segments_seen = set(_texts(_list(seen, "segments_seen"), "segments_seen"))
    else:
        for shard, segments in _map(seen, "segments_seen").items():
            shard_seen = set(_texts(_list(segments, "segments_seen"), "segments_seen"))
            rollup.shard_segments[_shard(shard, shards, "segments_seen")] = shard_seen
            rollup.segments_seen |= shard_seen
    rollup.final = _numbered(body["final"], "final", shards)
    rollup.cut = _int(body["cut"], "cut")
    for shard, hours in _map(body["captured"], "captured").items():
        rollup.captured[_shard(shard, shards, "captured")] = {_int(h, "captured") for h in _list(hours, "captured")}
    for shard, groups in _map(body["partials"], "partials").items():
        values = cell_values(groups, f"partials[{shard}]")
        _check_quantities(values, f"partials[{shard}]")
        number = _shard(shard, shards, "partials")
        kept = rollup.partials[number] = {}
        rows = rollup.point_partials[number] = PointRows()
        for (quantity, segment, hour), value in values.items():
            if not is_history(quantity):
                rollup.ledger.add((quantity, segment, hour), value)
            if is_history(quantity) and quantity not in BASE_OF:
                rows.swap(quantity, segment, hour, value)
            elif value:
                kept[(quantity, segment, hour)] = value
    points = cell_values(body["points"], "points")
    _check_quantities(points, "points")
    for (quantity, segment, hour), value in points.items():
        rollup.points.swap(quantity, segment, hour, value)
    rollup.version = 1
    return rollup, positions


def _check_quantities(values: dict[Key, int], where: str) -> None:
    unknown = {quantity for quantity, _, _ in values} - QUANTITIES.keys() - QUANTITIES_OF_HISTORY
    if unknown:
        _fail(where, f"quantities no shard writes: {sorted(unknown)[:3]}")


def _shard(text: str, shards: int, where: str) -> int:
    if not (text.isdigit() and len(text) <= 6 and int(text) < shards):
        _fail(where, f"not a shard of {shards}: {text[:20]!r}")
    return int(text)


def _numbered(value: Any, where: str, count: int) -> dict[int, int]:
    """An object of integers by a number below `count` (a shard or a partition)."""
    return {_shard(k, count, where): _int(v, where) for k, v in _map(value, where).items()}
