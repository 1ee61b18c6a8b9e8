"""bench.profile: a profile entry's module, and the own time summed per module."""

from __future__ import annotations

import cProfile
import pstats

import pytest

from bench.profile import by_module, module_of


def test_modules_are_named_short() -> None:
    assert module_of("/work/main/streams/engine.py") == "streams/engine.py"
    assert module_of("~") == "built-ins"
    assert module_of("/venv/lib/python3.11/site-packages/aiokafka/consumer/fetcher.py") == "aiokafka"
    assert module_of("/venv/lib/python3.11/site-packages/orjson.cpython-311.so") == "orjson.cpython-311.so"
    assert module_of("/usr/lib/python3.11/bisect.py") == "bisect.py"


def test_own_time_per_module_sums_every_entry() -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    sorted(range(1000), key=lambda n: -n)
    profiler.disable()
    stats = pstats.Stats(profiler)
    per_module = by_module(stats)
    entries = stats.stats  # type: ignore[attr-defined]
    assert sum(per_module.values()) == pytest.approx(sum(tottime for _, _, tottime, _, _ in entries.values()))
    assert per_module.keys() == {"built-ins", "bench/test_profile.py"}  # the lambda, sorted()
