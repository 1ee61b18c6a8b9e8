"""Dead letters remembered: by a 16-byte id, at most a fixed number, read back from hostile headers."""

from __future__ import annotations

from revpulse.agents.letters import WrittenLetters, _as_letter, letter_id
from revpulse.streams.partition import DeadLetter


def letter(offset: int, payload: bytes = b"{}") -> DeadLetter:
    return DeadLetter(payload, "invalid_event", "detail", "crm.events", 2, offset)


def test_a_letter_is_the_same_one_by_source_position_and_bytes_not_by_reason_or_detail() -> None:
    same = DeadLetter(b"{}", "processing_error", "other detail", "crm.events", 2, 7)
    assert letter_id(letter(7)) == letter_id(same)
    assert len(letter_id(letter(7))) == 16
    assert letter_id(letter(7)) != letter_id(letter(8))
    assert letter_id(letter(7)) != letter_id(letter(7, b"[]"))
    assert letter_id(letter(7)) != letter_id(DeadLetter(b"{}", "", "", "crm.events", 27, 7 // 10))


def test_only_the_most_recent_letters_are_remembered() -> None:
    written = WrittenLetters(limit=3)
    for offset in range(5):
        written.add(letter(offset))
    assert len(written) == 3
    assert [offset for offset in range(5) if letter(offset) in written] == [2, 3, 4]


def test_a_letter_seen_again_becomes_recent() -> None:
    written = WrittenLetters(limit=2)
    written.add(letter(0))
    written.add(letter(1))
    written.add(letter(0))
    written.add(letter(2))
    assert [offset for offset in range(3) if letter(offset) in written] == [0, 2]


def test_a_letter_read_back_identifies_as_the_one_written() -> None:
    original = letter(41, b'{"type": 17}')
    headers = [(key, value) for key, value in original.headers]
    assert letter_id(_as_letter(original.payload, headers)) == letter_id(original)


def test_hostile_headers_identify_nothing_rather_than_fail() -> None:
    read = _as_letter(None, [("revpulse.source.offset", b"\xff\xfe"), ("revpulse.source.partition", None)])
    assert (read.payload, read.topic, read.partition, read.offset) == (b"", "", -1, -1)
