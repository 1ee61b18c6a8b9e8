"""Which dead letters are already on the dead-letter topic, so that a shard catching up writes none twice."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict

from revpulse.agents.base import scan_topic
from revpulse.settings import Settings
from revpulse.streams.partition import DeadLetter

log = logging.getLogger(__name__)

# Letters remembered: a catching-up shard re-derives only the letters of items since its snapshot (taken every
# `REVPULSE_SNAPSHOT_INTERVAL`), so the recent ones are all that can be written twice. At 16 bytes of digest a
# letter this is about 10 MB, whatever the topic holds; a flood of more letters than this since a snapshot can
# repeat an old letter on the topic, never lose one.
REMEMBERED = 100_000
# Reading the dead-letter topic on assignment never holds a shard longer than this: what was read by then is
# what is remembered.
READ_TIMEOUT = 20.0


def letter_id(letter: DeadLetter) -> bytes:
    """What makes a dead letter the same one when a replay would write it again, in 16 bytes."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{letter.topic}\0{letter.partition}\0{letter.offset}\0".encode())
    digest.update(letter.payload)
    return digest.digest()


class WrittenLetters:
    """The ids of the most recent dead letters written, at most `limit` of them."""

    def __init__(self, limit: int = REMEMBERED) -> None:
        self.limit = limit
        self._ids: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, letter: DeadLetter) -> bool:
        return letter_id(letter) in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, letter: DeadLetter) -> None:
        self._remember(letter_id(letter))

    def _remember(self, ident: bytes) -> None:
        self._ids[ident] = None
        self._ids.move_to_end(ident)
        if len(self._ids) > self.limit:
            self._ids.popitem(last=False)

    async def read(self, settings: Settings, *, timeout: float = READ_TIMEOUT) -> None:
        """Remember the last `limit` letters on the dead-letter topic (bounded in time and memory)."""
        read = 0
        try:
            async for record in scan_topic(settings, settings.topics.deadletter, tail=self.limit, timeout=timeout):
                self._remember(letter_id(_as_letter(record.value, record.headers)))
                read += 1
        except TimeoutError:
            log.warning("dead-letter topic not read to its end within %ss: %d letters remembered", timeout, read)


def _as_letter(value: bytes | None, headers: list[tuple[str, bytes | None]] | None) -> DeadLetter:
    """The identifying part of a letter read back; headers are anybody's bytes, so a bad one identifies
    nothing rather than stopping the read."""
    fields = {key: (raw or b"").decode("utf-8", "replace") for key, raw in headers or []}

    def number(name: str) -> int:
        try:
            return int(fields.get(name, "-1"))
        except ValueError:
            return -1

    return DeadLetter(
        value or b"",
        fields.get("revpulse.reason", ""),
        "",
        fields.get("revpulse.source.topic", ""),
        number("revpulse.source.partition"),
        number("revpulse.source.offset"),
    )
