"""A worker's memory series: the peaks over the samples, and the lines that show them."""

from __future__ import annotations

from bench.procmem import GroupSample, GroupSampler
from bench.worker_series import Series

MIB = 2**20


def test_peaks_are_the_largest_of_each_figure_over_the_samples() -> None:
    sampler = GroupSampler(pid=0)  # not started: the samples are given
    series = Series(total=1_000_000, started=100.0, sampler=sampler)
    samples = [
        GroupSample(at=103.0, pss=300 * MIB, root_pss=250 * MIB, root_rss=260 * MIB, processes=1),
        GroupSample(at=106.0, pss=420 * MIB, root_pss=240 * MIB, root_rss=250 * MIB, processes=2),  # a copy runs
        GroupSample(at=109.0, pss=310 * MIB, root_pss=290 * MIB, root_rss=300 * MIB, processes=1),
    ]
    sampler.samples.extend(samples)
    assert (sampler.peak_pss, sampler.peak_root_pss) == (420 * MIB, 290 * MIB)
    assert series.line(samples[1], 250_000) == (
        "   6.0s   25% PSS   420 MiB (worker   240, 2 processes); peak   420 (worker   290)"
    )
    assert series.summary(181.0) == "read 1,000,000 events in 81 s; peak PSS 420 MiB, the worker alone 290 MiB"
