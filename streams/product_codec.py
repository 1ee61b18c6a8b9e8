"""An account's product events as an encoded account holds them: time deltas packed, one letter a type.

Product events are most of what an account keeps (two or more `product.usage` a day over the last ~97 days), so
their encoding is most of an account's bytes in memory (accounts beyond the hot limit are held encoded) and in
snapshots. A list of `[µs, seq, "product.usage"]` costs about 40 bytes an event; this costs about 6.

The form, inside the account's JSON: `[]`, or `[scale, first, deltas, types, seqs]`:
* `scale`: 1000 when every time is a whole millisecond (almost always), else 1; times are in units of it;
* `first`: the first event's time (units); `deltas`: each later event's time minus the one before it (units,
  ≥ 0, sorted events), as a base64 string of little-endian uint32 when every delta fits, else a list of ints;
* `types`: one letter per event (`TYPE_LETTERS`);
* `seqs`: `[index, seq, …]` for the events whose arrival sequence is not 0 (see `Engine._add_product`: only an
  event that arrived after a segment point of the same time keeps its sequence), indices increasing.
"""

from __future__ import annotations

import sys
from array import array
from base64 import b64decode, b64encode
from binascii import Error as Base64Error
from itertools import accumulate, pairwise, repeat
from typing import Any, Final

ProductEvent = tuple[int, int, str]  # (occurred_at µs, arrival sequence or 0, type)

TYPE_LETTERS: Final = {
    "product.usage": "u",
    "product.signup": "s",
    "product.trial_started": "t",
    "product.activated": "a",
}
_LETTER_TYPES: Final = {letter: name for name, letter in TYPE_LETTERS.items()}
_UINT32: Final = 2**32
_LITTLE: Final = sys.byteorder == "little"
MAX_EVENTS: Final = 10_000_000  # an account with more product events than this is not one of ours


class ProductCodecError(ValueError):
    pass


def _packed(deltas: list[int]) -> str | list[int]:
    if max(deltas, default=0) >= _UINT32:
        return deltas
    packed = array("I", deltas)
    if not _LITTLE:
        packed.byteswap()
    return b64encode(packed.tobytes()).decode("ascii")


def encode_product(events: list[ProductEvent]) -> list[Any]:
    if not events:
        return []
    scale = 1000 if all(t % 1000 == 0 for t, _, _ in events) else 1
    units = [t // scale for t, _, _ in events]
    deltas = [b - a for a, b in pairwise(units)]
    types = "".join(TYPE_LETTERS[name] for _, _, name in events)
    seqs = [x for i, (_, seq, _) in enumerate(events) if seq for x in (i, seq)]
    return [scale, units[0], _packed(deltas), types, seqs]


def _uint32s(raw: bytes) -> list[int]:
    packed = array("I")
    packed.frombytes(raw)
    if not _LITTLE:
        packed.byteswap()
    return packed.tolist()


def _unpacked(deltas: str | list[int]) -> list[int]:
    return deltas if isinstance(deltas, list) else _uint32s(b64decode(deltas))


def decode_product(data: list[Any]) -> list[ProductEvent]:
    """The events `encode_product` encoded (or a form `check_product` accepted)."""
    if not data:
        return []
    scale, first, deltas, types, seqs = data
    times = [t * scale for t in accumulate(_unpacked(deltas), initial=first)]
    events = list(zip(times, repeat(0), map(_LETTER_TYPES.__getitem__, types), strict=False))
    for i in range(0, len(seqs), 2):
        t, _, name = events[seqs[i]]
        events[seqs[i]] = (t, seqs[i + 1], name)
    return events


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def check_product(data: object) -> None:
    """Raise ProductCodecError unless `data` (parsed JSON, hostile) is a form `decode_product` rebuilds: events in
    order, known types, sequences that index an event."""
    if data == []:
        return
    if not isinstance(data, list) or len(data) != 5:
        raise ProductCodecError("expected [] or [scale, first, deltas, types, seqs]")
    scale, first, deltas, types, seqs = data
    if scale not in (1, 1000) or type(scale) is not int:
        raise ProductCodecError(f"scale must be 1 or 1000, not {scale!r:.40}")
    if not _is_int(first, 0, 2**62 // scale):
        raise ProductCodecError("first time out of range")
    if isinstance(deltas, str):
        try:
            raw = b64decode(deltas, validate=True)
        except (Base64Error, ValueError):
            raise ProductCodecError("deltas are not base64") from None
        if len(raw) % 4:
            raise ProductCodecError("packed deltas are not whole uint32")
        values = _uint32s(raw)
    elif isinstance(deltas, list):
        if not all(_is_int(delta, 0, 2**62) for delta in deltas):
            raise ProductCodecError("a delta is not an integer ≥ 0")
        values = deltas
    else:
        raise ProductCodecError("deltas must be base64 or a list")
    count = len(values)
    if count >= MAX_EVENTS:
        raise ProductCodecError("too many events")
    if not isinstance(types, str) or len(types) != count + 1 or not set(types) <= _LETTER_TYPES.keys():
        raise ProductCodecError("types must be one known letter per event")
    if first + sum(values) > 2**62 // scale:
        raise ProductCodecError("times out of range")
    if not isinstance(seqs, list) or len(seqs) % 2:
        raise ProductCodecError("seqs must be [index, seq, …]")
    indices = seqs[0::2]
    if not all(_is_int(i, 0, count) for i in indices) or indices != sorted(set(indices)):
        raise ProductCodecError("seq indices must be increasing event indices")
    if not all(_is_int(seq, 1, 2**62) for seq in seqs[1::2]):
        raise ProductCodecError("a sequence is not an integer ≥ 1")
