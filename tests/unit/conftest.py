"""Factories shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from revpulse.settings import Settings
from tests.support.harness import Harness


@pytest.fixture
def harness_factory() -> Callable[..., Harness]:
    def make(**settings: Any) -> Harness:
        return Harness(Settings(clock="event", **settings))

    return make


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()
