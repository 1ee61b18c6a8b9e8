"""`revpulse_processing_lag_seconds`: a histogram observed a batch of events at a time.

prometheus_client's `Histogram.observe` takes one value per call; at tens of thousands of events a second that
per-call cost shows in the profile. Events of one producer batch share their millisecond timestamp, so a batch
is counted per distinct arrival, each into its bucket at once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class LagHistogram(Collector):
    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(buckets)  # finite upper bounds, ascending; +Inf is implied
        self.counts = [0] * (len(self.bounds) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.sum = 0.0

    def observe(self, now: float, arrivals: Iterable[float]) -> None:
        """One observation per arrival: `now - arrival` seconds (0 when the clocks disagree)."""
        for arrival, count in Counter(arrivals).items():
            lag = max(0.0, now - arrival)
            self.counts[bisect_left(self.bounds, lag)] += count  # bucket `le` holds lag <= le
            self.sum += lag * count

    def collect(self) -> Iterator[Metric]:
        cumulative = list(accumulate(self.counts))
        buckets = [(floatToGoString(bound), count) for bound, count in zip(self.bounds, cumulative, strict=False)]
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], [*buckets, ("+Inf", cumulative[-1])], self.sum)
        yield family
