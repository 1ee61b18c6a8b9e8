"""Reading the history (SPEC §5): the `/api/history` query and answer, and the OpenMetrics export for backfill."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from revpulse.streams.catalogue import HELP
from revpulse.streams.packed_series import Names, PackedSeries
from revpulse.streams.series import Series
from revpulse.streams.windows import US_PER_SECOND, isoformat

Points = Sequence[tuple[int, Sequence[Series]]]  # (midnight µs, every series at it), oldest first
Labels = tuple[tuple[str, str], ...]

_MAX_PARAMETER = 200


class QueryError(ValueError):
    """A query that names no series or several, or a malformed parameter; the message says which."""


@dataclass(frozen=True)
class Query:
    metric: str
    labels: Mapping[str, str] = field(default_factory=dict)
    start: int | None = None  # µs, inclusive
    end: int | None = None


def parse_date(text: str) -> int | None:
    """µs of `2025-01-01` (its midnight) or of an RFC 3339 instant; None when `text` is neither."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return round(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * US_PER_SECOND)
        instant = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return round(instant.timestamp() * US_PER_SECOND)


def parse_query(parameters: Mapping[str, str]) -> Query:
    """`metric` and label filters; `from`/`to` are a date range when they read as dates, else the labels of
    the funnel's conversion pairs (stage names never read as dates)."""
    metric = parameters.get("metric")
    if not metric:
        raise QueryError("the metric parameter is required, e.g. ?metric=mrr&segment=all")
    labels: dict[str, str] = {}
    start = end = None
    for name, value in parameters.items():
        if len(name) > _MAX_PARAMETER or len(value) > _MAX_PARAMETER:
            raise QueryError("a parameter is too long")
        if name == "metric":
            continue
        instant = parse_date(value) if name in ("from", "to") else None
        if name == "from" and instant is not None:
            start = instant
        elif name == "to" and instant is not None:
            end = instant
        else:
            labels[name] = value
    return Query(metric, labels, start, end)


def _in_range(day: int, start: int | None, end: int | None) -> bool:
    return (start is None or day >= start) and (end is None or day <= end)


def _names(query: Query | None, metric: str, labels: Labels) -> bool:
    """Whether `query` names the series (metric, labels); every series when there is no query."""
    return query is None or (metric == query.metric and all(dict(labels).get(k) == v for k, v in query.labels.items()))


def _grouped(points: Points, query: Query | None, start: int | None, end: int | None) -> dict[tuple[str, Labels], list]:
    """(metric, labels) -> its points in range, oldest first; only the series `query` names, if given."""
    out: dict[tuple[str, Labels], list[dict[str, Any]]] = {}
    # Packed points share their names: the series a query names are found once per tuple of names, not once per
    # point (400 points of a thousand series each, asked every few seconds by the board).
    picked: dict[int, tuple[Names, list[int]]] = {}
    for day, series in points:
        if not _in_range(day, start, end):
            continue
        names = series.names if isinstance(series, PackedSeries) else tuple((s.metric, s.labels) for s in series)
        known = picked.get(id(names))
        if known is None or known[0] is not names:
            indices = [i for i, (metric, labels) in enumerate(names) if _names(query, metric, labels)]
            known = picked[id(names)] = (names, indices)
        at = isoformat(day)
        for i in known[1]:
            s = series[i]
            out.setdefault((s.metric, s.labels), []).append({"at": at, "value": s.value})
    return out


def answer(points: Points, query: Query) -> dict[str, Any]:
    """The one series the query names, with its value at every kept midnight in range where it existed."""
    matches = _grouped(points, query, query.start, query.end)
    if not matches:
        raise QueryError(f"no series of {query.metric!r} with labels {dict(query.labels)} in the history")
    if len(matches) > 1:
        choices = "; ".join(",".join(f"{k}={v}" for k, v in labels) for _, labels in sorted(matches)[:20])
        raise QueryError(f"{len(matches)} series of {query.metric!r} match: add labels to pick one ({choices})")
    [((metric, labels), values)] = matches.items()
    return {"metric": metric, "labels": dict(labels), "points": values}


def every_series(points: Points, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
    """Every series in `/api/history`'s form."""
    grouped = _grouped(points, None, start, end)
    return [{"metric": m, "labels": dict(labels), "points": values} for (m, labels), values in sorted(grouped.items())]


def openmetrics(
    points: Points, start: int | None = None, end: int | None = None, extra: Mapping[str, str] | None = None
) -> Iterable[str]:
    """Every kept point of every series, as OpenMetrics text with timestamps (for `promtool tsdb
    create-blocks-from openmetrics`): named and labelled as on `/metrics`, plus the `extra` labels (e.g. the
    `job` the scrape adds, so the past and the scraped present are one series); undefined values left out as
    there. A family's samples come together, each series' in time order, as the format requires."""
    added = tuple(sorted((extra or {}).items()))
    families: dict[str, dict[Labels, list[tuple[int, float]]]] = {}
    for day, series in points:
        if not _in_range(day, start, end):
            continue
        for s in series:
            if s.value is not None:
                families.setdefault(s.metric, {}).setdefault(s.labels, []).append((day, s.value))
    for metric in sorted(families):
        name = f"revpulse_{metric}"
        yield f"# HELP {name} {_escape_help(HELP[metric])}\n"
        yield f"# TYPE {name} gauge\n"
        for labels, samples in sorted(families[metric].items()):
            inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sorted((*labels, *added)))
            for day, value in samples:
                yield f"{name}{{{inner}}} {_number(value)} {day // US_PER_SECOND}\n"
    yield "# EOF\n"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
