"""Input records read again for the spans a shard meets on its topic (`revpulse.streams.wire.Span`)."""

from __future__ import annotations

import bisect
import logging
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from revpulse.agents.base import MAX_BATCH, consumer, topic_partitions
from revpulse.settings import Settings
from revpulse.streams.partition import InputRecord, Router
from revpulse.streams.wire import Item, Span

log = logging.getLogger(__name__)

# Input records a shard reads again at once: what it holds while it does (a rebuild meets a span a batch).
REREAD_RECORDS = 20_000
# Input bytes it holds at most (about: plus a fetch): records may be as large as the broker takes (a flood of
# megabyte junk is dead letters, and spans like any other), and 20,000 of those would not fit in memory.
REREAD_BYTES = 64 * 2**20


class SpanReader:
    """A worker routes an item to a shard it owns by applying it there and then, and writes the shard topic only
    spans naming the input records (`LocalPath`). A shard meeting such a record it did not apply (after a restart,
    a takeover, or as a standby) reads those records again from the input topics, decodes them with the bound
    the router used and keeps its own items: exactly what the router applied.

    A span naming a partition that does not exist is skipped and counted (`unknown_partition`); one whose
    records the input partition no longer reaches (re-created, or cut short) ends where the partition ends,
    counted (`input_gone`). Records the input has dropped within a span (compaction, retention) are not there
    to read: keep input retention longer than snapshots take (README, Operations).
    """

    def __init__(
        self, settings: Settings, router: Router, on_skip: Callable[[str], None], budget: int = REREAD_BYTES
    ) -> None:
        self.settings = settings
        self.router = router
        self.on_skip = on_skip
        self.budget = budget  # input bytes held at once
        self.reader: AIOKafkaConsumer | None = None

    def twin(self) -> SpanReader:
        """A reader like this one, with a consumer of its own: for a task reading beside this reader's."""
        return SpanReader(self.settings, self.router, self.on_skip, self.budget)

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.stop()
            self.reader = None

    async def chunks(self, shard_id: int, spans: list[Span]) -> AsyncIterator[list[Item]]:
        """The items for shard `shard_id` of the records `spans` name, in span order, in lists to apply one after
        the other: one list when the records fit in the budget; else, read again a span at a time, one list a
        budget of its records (at least one record). Each span skipped or cut short is counted once."""
        spans = await self._known(spans)
        records, whole, gone = await self._fetch(spans)
        if whole:
            self._count_gone(gone)
            yield self._decode(shard_id, spans, records)
            return
        del records  # what the span-by-span reads below find again, gone runs included, counts
        for topic, partition, first, last, bound in spans:
            while first <= last:
                part, whole, gone = await self._fetch([(topic, partition, first, last, bound)])
                self._count_gone(gone)
                found = part.get((topic, partition), [])
                end = last if whole or gone or not found else found[-1].offset
                yield self._decode(shard_id, [(topic, partition, first, end, bound)], part)
                first = end + 1

    def _decode(
        self, shard_id: int, spans: list[Span], records: dict[tuple[str, int], list[InputRecord]]
    ) -> list[Item]:
        """The items for shard `shard_id` of the records of `spans`, span by span."""
        offsets = {source: [record.offset for record in found] for source, found in records.items()}
        items: list[Item] = []
        for topic, partition, first, last, bound in spans:
            found = records.get((topic, partition), [])
            at = offsets.get((topic, partition), [])
            run = found[bisect.bisect_left(at, first) : bisect.bisect_right(at, last)]
            decoded = [(record, self.router.decode(record, bound)) for record in run]
            items += self.router.route_decoded(decoded).get(shard_id, [])
        return items

    async def _known(self, spans: list[Span]) -> list[Span]:
        """`spans` but those naming a partition that does not exist, each of those counted."""
        if self.reader is None:
            self.reader = consumer(self.settings, None)
            await self.reader.start()
        partitions: dict[str, list[TopicPartition]] = {}
        known: list[Span] = []
        for span in spans:
            topic, partition = span[0], span[1]
            if topic not in partitions:
                partitions[topic] = await topic_partitions(self.reader, topic)
            if TopicPartition(topic, partition) in partitions[topic]:
                known.append(span)
            else:
                log.warning("shard topic: a span names %s[%d], which does not exist; skipped", topic, partition)
                self.on_skip("unknown_partition")
        return known

    def _count_gone(self, gone: list[tuple[TopicPartition, int, int]]) -> None:
        for tp, last, highwater in gone:
            log.warning(
                "shard topic: a span of %s[%d] ends at %d, past the partition's end (%d)",
                tp.topic,
                tp.partition,
                last,
                highwater,
            )
            self.on_skip("input_gone")

    async def _fetch(
        self, spans: list[Span]
    ) -> tuple[dict[tuple[str, int], list[InputRecord]], bool, list[tuple[TopicPartition, int, int]]]:
        """The records in `spans` (of partitions that exist), per partition in offset order, each partition's
        spans read as merged runs; whether that is all of them; and the runs found to end past their partition's
        end (the partition, the run's last offset, the partition's end). It stops once what it holds is over the
        budget: then, read from one span, it is that span's records from its first offset on."""
        assert self.reader is not None, "_known starts the reader"
        reader = self.reader
        wanted: dict[TopicPartition, list[list[int]]] = {}
        for topic, partition, first, last, _ in sorted(spans):
            runs = wanted.setdefault(TopicPartition(topic, partition), [])
            if runs and first <= runs[-1][1] + 1:
                runs[-1][1] = max(runs[-1][1], last)
            else:
                runs.append([first, last])
        out: dict[tuple[str, int], list[InputRecord]] = {(tp.topic, tp.partition): [] for tp in wanted}
        gone: list[tuple[TopicPartition, int, int]] = []
        reader.assign(list(wanted))
        current: dict[TopicPartition, list[int]] = {}

        def advance(tp: TopicPartition) -> None:
            if wanted[tp]:
                current[tp] = wanted[tp].pop(0)
                reader.seek(tp, current[tp][0])
            else:
                current.pop(tp, None)

        for tp in wanted:
            advance(tp)
        held = 0
        while current and held <= self.budget:
            batches = await reader.getmany(*current, timeout_ms=200, max_records=MAX_BATCH)
            for tp, batch in batches.items():
                if tp not in current:
                    continue
                first, last = current[tp]
                kept = out[(tp.topic, tp.partition)]
                for r in batch:
                    if first <= r.offset <= last:
                        kept.append(InputRecord(tp.topic, tp.partition, r.offset, r.value, r.timestamp / 1000))
                        held += len(r.value or b"")
                if batch and batch[-1].offset >= last:
                    advance(tp)  # what this batch holds past the run is fetched again from the next run's start
            for tp in list(current):
                # Read to the partition's end without reaching the run's: the rest is not there.
                highwater = reader.highwater(tp)
                if highwater is None or await reader.position(tp) < highwater:
                    continue
                if highwater <= current[tp][1]:
                    gone.append((tp, current[tp][1], highwater))
                advance(tp)
        # Assigned, the consumer would go on holding a fetch ahead for each partition (a MiB or so apiece).
        reader.unsubscribe()
        return out, not current, gone
