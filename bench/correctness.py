"""The worker's final `/api/metrics` against the independent batch computation (tests/support/reference.py) over the
same events, with the tolerance of tests/test_crosscheck.py and tests/integration/test_end_to_end.py."""

from __future__ import annotations

import math
from typing import Any

from bench.datasets import FX_RATES, Cached, reference_records
from tests.support.reference import RefResult, RefSettings, compute

REL, ABS = 1e-9, 1e-6


def reference(data: Cached) -> RefResult:
    """The batch reference over the data set's events in log order (each key's records keep that order in
    their partition; SPEC §2 makes everything else order-independent)."""
    return compute(reference_records(data), RefSettings(fx_rates=FX_RATES))


def _key(record: dict[str, Any]) -> str:
    labels = ",".join(f'{k}="{v}"' for k, v in sorted(record["labels"].items()))
    return f"{record['metric']}{{{labels}}}"


def _differs(got: float | None, expected: float | None) -> bool:
    if got is None or expected is None:
        return (got is None) != (expected is None)
    return not math.isclose(got, expected, rel_tol=REL, abs_tol=ABS)


def compare(api: list[dict[str, Any]], expected: RefResult) -> dict[str, Any]:
    """Series present on one side only, values that differ beyond the tolerance, and a wrong `as_of`."""
    got = {_key(record): record["value"] for record in api}
    as_of = None if expected.as_of is None else expected.as_of.isoformat().replace("+00:00", "Z")
    wrong = sorted(key for key, value in expected.series.items() if key in got and _differs(got[key], value))
    missing = sorted(expected.series.keys() - got.keys())
    extra = sorted(got.keys() - expected.series.keys())
    bad_as_of = sorted({record["as_of"] for record in api if record["as_of"] != as_of})
    return {
        "ok": not (wrong or missing or extra or bad_as_of),
        "series": len(expected.series),
        "differing": len(wrong),
        "missing": len(missing),
        "unexpected": len(extra),
        "examples": [(key, got[key], expected.series[key]) for key in wrong[:5]] + missing[:3] + extra[:3],
        "as_of": as_of,
        "wrong_as_of": bad_as_of[:3],
        "tolerance": {"rel": REL, "abs": ABS},
    }
