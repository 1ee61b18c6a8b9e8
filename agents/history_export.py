"""`revpulse history`: the history read from the partials topic, exactly as every worker's rollup reads it."""

from __future__ import annotations

import logging
from collections import Counter

from revpulse.agents.base import scan_topic
from revpulse.settings import Settings
from revpulse.streams.history_query import Points
from revpulse.streams.outputs import Outputs
from revpulse.streams.rollup import Pending, Rollup
from revpulse.streams.wire import WireError, parse_partial
from revpulse.topics import partials_topic

log = logging.getLogger(__name__)

_CHUNK = 20_000  # records applied to the rollup at once: a point is re-derived per update, not per record


async def read_history(settings: Settings, timeout: float = 600.0) -> Points:
    """Every kept history point, from the partials of every shard (no worker needed)."""
    rollup = Rollup()
    pending = Pending(rollup)
    skipped = 0
    records = 0
    async for record in scan_topic(settings, partials_topic(settings), timeout=timeout):
        try:
            parsed = parse_partial(record.key, record.value, settings.shards)
        except WireError:
            skipped += 1
            continue
        pending.add_record(parsed)
        records += 1
        if records % _CHUNK == 0:
            pending.apply()
    pending.apply()
    if skipped:
        log.warning("%d invalid partials records skipped", skipped)
    return Outputs(settings, rollup, Counter).history()
