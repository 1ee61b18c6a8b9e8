"""Tests of the synthetic business's configuration."""

from __future__ import annotations

from datetime import datetime

import pytest

from revpulse.synth.config import SynthConfig


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        SynthConfig(accounts=0)
    with pytest.raises(ValueError):
        SynthConfig(days=0)
    with pytest.raises(ValueError):
        SynthConfig(late_fraction=1.5)
    with pytest.raises(ValueError):
        SynthConfig(start=datetime(2024, 1, 1))  # naive
    with pytest.raises(ValueError):
        SynthConfig(currencies={"eur": 1.1})
    rates = {"EUR": 1.08}
    cfg = SynthConfig(currencies=rates)
    rates["GBP"] = 1.27  # the config keeps its own immutable copy
    assert dict(cfg.currencies) == {"EUR": 1.08}
    assert cfg == SynthConfig() and hash(cfg) == hash(SynthConfig())
