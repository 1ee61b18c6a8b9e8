"""`/api/history` queries and answers, and the OpenMetrics export, on literal points."""

from __future__ import annotations

import pytest

from revpulse.streams.history_query import Query, QueryError, answer, every_series, openmetrics, parse_query
from revpulse.streams.series import Series

DAY = 86_400 * 1_000_000
JAN1 = 1_704_067_200 * 1_000_000  # 2024-01-01T00:00:00Z
CONVERSION = (("from", "lead"), ("segment", "all"), ("to", "mql"), ("window", "30d"))
POINTS = [
    (JAN1, [Series("mrr", (("segment", "all"),), 100.0), Series("mrr", (("segment", "smb"),), 40.0)]),
    (
        JAN1 + DAY,
        [
            Series("mrr", (("segment", "all"),), 110.5),
            Series("mrr", (("segment", "smb"),), None),
            Series("stage_conversion_rate", CONVERSION, 0.25),
        ],
    ),
]


def test_from_and_to_are_dates_when_they_read_as_dates_and_labels_otherwise() -> None:
    query = parse_query({"metric": "stage_conversion_rate", "from": "lead", "to": "2024-01-02", "window": "30d"})
    assert query == Query("stage_conversion_rate", {"from": "lead", "window": "30d"}, None, JAN1 + DAY)
    assert parse_query({"metric": "mrr", "from": "2024-01-01T00:00:00Z"}).start == JAN1
    with pytest.raises(QueryError, match="metric parameter is required"):
        parse_query({"segment": "all"})


def test_the_answer_is_the_one_series_named_with_nulls_and_only_where_it_existed() -> None:
    assert answer(POINTS, Query("mrr", {"segment": "smb"})) == {
        "metric": "mrr",
        "labels": {"segment": "smb"},
        "points": [{"at": "2024-01-01T00:00:00Z", "value": 40.0}, {"at": "2024-01-02T00:00:00Z", "value": None}],
    }
    conversion = answer(POINTS, Query("stage_conversion_rate", {"from": "lead", "to": "mql"}))
    assert conversion["points"] == [{"at": "2024-01-02T00:00:00Z", "value": 0.25}]
    assert answer(POINTS, Query("mrr", {"segment": "all"}, start=JAN1 + DAY))["points"] == [
        {"at": "2024-01-02T00:00:00Z", "value": 110.5}
    ]


def test_a_query_naming_several_series_or_none_is_refused_with_the_reason() -> None:
    with pytest.raises(QueryError, match=r"2 series of 'mrr' match: add labels to pick one \(segment=all; segment=smb"):
        answer(POINTS, Query("mrr"))
    with pytest.raises(QueryError, match="no series of 'arr'"):
        answer(POINTS, Query("arr", {"segment": "all"}))


def test_every_series_in_the_api_form() -> None:
    assert [(s["metric"], s["labels"], len(s["points"])) for s in every_series(POINTS)] == [
        ("mrr", {"segment": "all"}, 2),
        ("mrr", {"segment": "smb"}, 2),
        ("stage_conversion_rate", dict(CONVERSION), 1),
    ]


def test_openmetrics_groups_each_family_with_timestamps_and_leaves_undefined_values_out() -> None:
    assert "".join(openmetrics(POINTS)) == (
        "# HELP revpulse_mrr Monthly recurring revenue at as_of: sum of customer MRR\n"
        "# TYPE revpulse_mrr gauge\n"
        'revpulse_mrr{segment="all"} 100.0 1704067200\n'
        'revpulse_mrr{segment="all"} 110.5 1704153600\n'
        'revpulse_mrr{segment="smb"} 40.0 1704067200\n'
        "# HELP revpulse_stage_conversion_rate Funnel conversion from one stage to the next in the window\n"
        "# TYPE revpulse_stage_conversion_rate gauge\n"
        'revpulse_stage_conversion_rate{from="lead",segment="all",to="mql",window="30d"} 0.25 1704153600\n'
        "# EOF\n"
    )
    assert "".join(openmetrics(POINTS, start=JAN1 + DAY)).count("revpulse_mrr{") == 1


def test_openmetrics_adds_the_extra_labels_in_order() -> None:
    text = "".join(openmetrics(POINTS[:1], extra={"job": "revpulse"}))
    assert 'revpulse_mrr{job="revpulse",segment="all"} 100.0 1704067200\n' in text
