"""The packed form of an account's product events: exact round trips, and the bytes it saves."""

from __future__ import annotations

import orjson
import pytest

from revpulse.streams.engine import Account
from revpulse.streams.product_codec import ProductCodecError, check_product, decode_product, encode_product

MS = 1_000
DAY_MS = 86_400_000
T0 = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in µs


def test_whole_milliseconds_pack_as_uint32_deltas() -> None:
    events = [
        (T0, 0, "product.signup"),
        (T0 + 1 * MS, 0, "product.usage"),
        (T0 + 1 * MS, 7, "product.usage"),
        (T0 + DAY_MS * MS, 0, "product.activated"),
    ]
    encoded = encode_product(events)
    assert encoded == [1000, T0 // MS, "AQAAAAAAAAD/WyYF", "suua", [2, 7]]  # deltas 1, 0, 86,399,999 ms
    check_product(orjson.loads(orjson.dumps(encoded)))
    assert decode_product(orjson.loads(orjson.dumps(encoded))) == events


def test_microseconds_and_long_gaps_fall_back_to_plain_integers() -> None:
    gap = 50 * DAY_MS  # more than 2³² ms
    events = [(T0 + 1, 0, "product.usage"), (T0 + 1 + gap * MS, 0, "product.trial_started")]
    assert encode_product(events) == [1, T0 + 1, [gap * MS], "ut", []]
    events = [(T0, 0, "product.usage"), (T0 + gap * MS, 3, "product.usage")]
    assert encode_product(events) == [1000, T0 // MS, [gap], "uu", [1, 3]]
    assert decode_product(encode_product(events)) == events


def test_no_events_are_an_empty_list() -> None:
    assert encode_product([]) == []
    assert decode_product([]) == []
    check_product([])


@pytest.mark.parametrize(
    "data",
    [None, [1000], [1000, 1, "AAAAAA==", "u", []], [1000, "1", [], "u", []], [True, 1, [], "u", []], {}],
)
def test_what_is_not_the_form_is_refused(data: object) -> None:
    with pytest.raises(ProductCodecError):
        check_product(data)


def test_an_account_of_usage_takes_a_sixth_of_the_bytes() -> None:
    usage = [
        (T0 + day * DAY_MS * MS + hour * 3_600_000_000, 0, "product.usage") for day in range(97) for hour in (9, 15)
    ]
    account = Account(product=usage)
    listed = len(orjson.dumps([[t, seq, name] for t, seq, name in usage]))
    packed = len(orjson.dumps(encode_product(usage)))
    # 194 × 36 bytes, commas and brackets; against 1,032 of base64 (193 × 4 bytes), 194 letters, the rest
    assert (listed, packed) == (7_179, 1_255)
    assert Account.decode(account.encode()).product == usage


def test_an_account_encoded_before_the_packed_form_decodes_the_same() -> None:
    account = Account(product=[(T0, 4, "product.usage"), (T0 + MS, 9, "product.signup")])
    record = orjson.loads(account.encode())
    record[7] = [[T0, 4, "product.usage"], [T0 + MS, 9, "product.signup"]]
    assert Account.decode(orjson.dumps(record)) == account
