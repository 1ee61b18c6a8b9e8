"""Prometheus exposition of the current series: one gauge family `revpulse_<metric>` per metric."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from revpulse.streams.catalogue import HELP
from revpulse.streams.series import Series


class SeriesCollector(Collector):
    """Yields the latest series; undefined values are left out, as SPEC §4 asks."""

    def __init__(self, current: Callable[[], Sequence[Series]]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for series in self.current():
            if series.value is None:
                continue
            family = families.get(series.metric)
            if family is None:
                names = [name for name, _ in series.labels]
                family = families[series.metric] = GaugeMetricFamily(
                    f"revpulse_{series.metric}", HELP[series.metric], labels=names
                )
            family.add_metric([value for _, value in series.labels], series.value)
        yield from families.values()
