"""bench/results.md: a small markdown table per part, from the results dict that bench/results.json holds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = Sequence[object]


def table(header: Row, rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _eps(rate: dict[str, Any] | None) -> object:
    return "—" if rate is None else rate["events_per_second"]


def _throughput(part: dict[str, Any]) -> str:
    faust = part.get("faust_baseline")
    revpulse = part["revpulse_1_worker"]
    ceiling = part["ceiling"]["events_per_second"]
    rows = [("ceiling: aiokafka getmany + orjson.loads", _eps(part["ceiling"]), part["ceiling"]["events"], "1.00", "")]
    if faust is not None:
        rows.append(
            (
                "plain Faust agent, one event at a time",
                _eps(faust),
                faust["events"],
                f"{faust['events_per_second'] / ceiling:.2f}",
                "" if faust["complete"] else f"stopped after {faust['seconds']:.0f} s",
            )
        )
    peer = part.get("quix_peer")
    if peer is not None:
        rows.append(
            (
                f"peer: Quix Streams {peer['version']}, one windowed aggregate",
                _eps(peer),
                peer["events"],
                f"{peer['events_per_second'] / ceiling:.2f}",
                peer["aggregate"],
            )
            if "error" not in peer
            else ("peer: Quix Streams", "—", "—", "", f"did not run: {peer['error']}")
        )
    gain = f"{part['gain_over_faust']:.1f}× the Faust baseline; " if faust is not None else ""
    rows.append(
        (
            "RevPulse, 1 worker, all metrics",
            _eps(revpulse),
            revpulse["events"],
            f"{part['ratio_to_ceiling']:.2f}",
            f"{gain}peak RSS {revpulse['peak_rss_mb'][0]} MB",
        )
    )
    for run in part.get("more_workers", ()):
        check = run["correctness"]
        rows.append(
            (
                f"RevPulse, {run['workers']} workers, all metrics",
                _eps(run),
                run["events"],
                f"{run['events_per_second'] / ceiling:.2f}",
                f"{run['events_per_second'] / revpulse['events_per_second']:.2f}× 1 worker; "
                f"peak RSS {' / '.join(f'{mb} MB' for mb in run['peak_rss_mb'])}; "
                f"{'metrics equal to the reference' if check['ok'] else 'metrics DIFFER from the reference'}",
            )
        )
    bound = part.get("in_process")
    if bound is not None:
        rows += [
            (f"no Kafka, one process: {what}", _eps(bound[name]), bound[name]["events"], "", note)
            for name, what, note in (
                ("decode", "decode + validate only", "the floor of any design validating in Python"),
                ("pipeline", "the whole pipeline", "decode, route, engine, rollup: the bound for one worker"),
            )
        ]
    check = part.get("correctness")
    verdict = "not checked" if check is None else _verdict(check)
    return (
        f"### Throughput — {part['dataset']}\n\n"
        + table(("consumer", "events/s", "events timed", "× ceiling", "note"), rows)
        + f"\n\nCorrectness vs tests/reference.py: {verdict}"
    )


def _verdict(check: dict[str, Any]) -> str:
    if check["ok"]:
        return (
            f"all {check['series']:,} series equal (rel {check['tolerance']['rel']}, abs {check['tolerance']['abs']})"
        )
    return (
        f"**MISMATCH**: {check['differing']} differing, {check['missing']} missing, {check['unexpected']} unexpected "
        f"of {check['series']} series; wrong as_of {check['wrong_as_of']}; e.g. {check['examples'][:3]}"
    )


def _latency(part: dict[str, Any]) -> str:
    rows = [
        (name, part[name]["seconds"], f"({part[name]['bucket'][0]}, {part[name]['bucket'][1]}]")
        for name in ("p50", "p99")
    ]
    return (
        f"### Latency — {part['target_rate']:,.0f} events/s offered for {part['seconds']:.0f} s "
        f"(achieved {part['offered_rate']:,.0f}/s), clock wall, publish interval {part['publish_interval']} s\n\n"
        + table(("revpulse_processing_lag_seconds", "seconds (interpolated)", "bucket"), rows)
        + f"\n\n{part['observations']:,} observations after a {part['warmup_seconds']:.0f} s warm-up; "
        f"all counted {part['drain_seconds']:.1f} s after the producer stopped."
    )


def _scale(part: dict[str, Any]) -> str:
    rows = [
        (run["workers"], run["events_per_second"], run["seconds"], " / ".join(map(str, run["peak_rss_mb"])))
        for run in (part["1_worker"], part["2_workers"])
    ]
    check = part.get("correctness_2_workers")
    return (
        f"### Scale — {part['dataset']}\n\n"
        + table(("workers", "events/s", "seconds (first commit → all counted)", "peak RSS MB per worker"), rows)
        + f"\n\nSpeed-up: {part['speedup']:.2f}×. 2-worker metrics vs tests/reference.py: "
        + ("not checked" if check is None else _verdict(check))
    )


def _growth(rows: list[dict[str, Any]]) -> str:
    return "### Cost growth — 1 worker\n\n" + table(
        ("events", "accounts (base)", "events/s", "events timed", "peak RSS MB", "data set"),
        [
            (r["size"], r["accounts"], r["events_per_second"], r["events"], r["peak_rss_mb"][0], r["dataset"])
            for r in rows
        ],
    )


def history_markdown(part: dict[str, Any]) -> str:
    from bench.growth import markdown  # bench.growth imports this module's `table`

    return markdown(part)


def memory_markdown(part: dict[str, Any]) -> str:
    from bench.account_memory import markdown  # it imports this module's `table`

    return markdown(part)


def _datasets(datasets: dict[str, Any]) -> str:
    parts = []
    for name, meta in datasets.items():
        mix = ", ".join(f"{kind} {info['share']:.1%}" for kind, info in meta["types"].items())
        parts.append(
            f"- `{name}`: {meta['events']:,} events, {meta['distinct_accounts']:,} distinct accounts, "
            f"{meta['span_days']} days of event time. Mix: {mix}."
        )
    return "### Data sets\n\n" + "\n".join(parts)


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    out = [
        f"## RevPulse benchmark — {results['started']} ({results['preset']})",
        f"{machine['cpus']} CPUs, Python {machine['python']}, tree {machine['commit']}, "
        f"load average {machine['load_before']} before / {machine['load_after']} after.",
    ]
    sections = {
        "throughput": _throughput,
        "long": _throughput,
        "latency": _latency,
        "memory": memory_markdown,
        "scale": _scale,
        "growth": _growth,
        "history": history_markdown,
        "datasets": _datasets,
    }
    out += [render(results[name]) for name, render in sections.items() if results.get(name)]
    if results.get("notes"):
        out.append("### Notes\n\n" + "\n".join(f"- {note}" for note in results["notes"]))
    return "\n\n".join(out) + "\n"
