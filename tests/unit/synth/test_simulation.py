"""Tests of the simulation's events: deterministic, valid per SPEC §1, in every format and type."""

from __future__ import annotations

import itertools
import json
from collections import Counter

from revpulse.schemas.models import EVENT_TYPES
from revpulse.synth.config import SynthConfig, topic_for
from revpulse.synth.delivery import generate
from tests.unit.synth.checks import CONFIG, TOPICS, Stream, check_event, classify


def test_deterministic() -> None:
    a = list(generate(CONFIG, events=5_000))
    b = list(generate(CONFIG, events=5_000))
    assert a == b
    c = list(generate(SynthConfig(seed=CONFIG.seed + 1), events=5_000))
    assert c != a
    assert list(itertools.islice(generate(CONFIG), 2_000)) == list(itertools.islice(generate(CONFIG), 2_000))


def test_every_event_valid(stream: Stream) -> None:
    for topic, ev in stream:
        check_event(ev, CONFIG.currencies)
        assert topic == TOPICS[ev["type"].split(".")[0]] == topic_for(ev["type"])
        assert classify(json.dumps(ev).encode(), CONFIG.currencies) == (None,)


def test_occurred_at_formats(stream: Stream) -> None:
    values = [ev["occurred_at"] for _, ev in stream]
    ints = [v for v in values if isinstance(v, int)]
    strings = [v for v in values if isinstance(v, str)]
    assert not any(isinstance(v, bool) for v in values)
    zulu = [v for v in strings if v.endswith("Z")]
    assert len(zulu) > 0.6 * len(values)  # mostly RFC 3339 with Z
    assert any("." in v for v in zulu)
    assert any(v.endswith("+02:00") and "." in v for v in strings)
    assert any(not v.endswith("Z") and not v.endswith("+02:00") for v in strings)
    assert 0.03 * len(values) < len(ints) < 0.2 * len(values)


def test_mix_includes_every_type(stream: Stream) -> None:
    counts = Counter(ev["type"] for _, ev in stream)
    assert set(counts) == set(EVENT_TYPES)
    assert counts.most_common(1)[0][0] == "product.usage"
