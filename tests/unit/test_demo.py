"""`revpulse demo` (issue 15, item 5): the board's address comes first, and the live stream tells a story: the
history at once, the last days at an accelerated pace, then real time, never ahead of the wall clock."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from revpulse.local import demo
from revpulse.local.demo import ACCELERATED_DAYS, ACCELERATION, HISTORY_DAYS, Pacer, board_line, read_headers, watermark
from revpulse.settings import Settings

DAY_MS = 86_400_000
T0 = 1_760_000_000_000


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"REVPULSE_DATA_DIR": str(tmp_path), "REVPULSE_WEB_PORT": "6099", **env})


def test_the_first_line_printed_is_the_boards_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Stop(Exception):
        pass

    class NoBroker:
        def __init__(self, *args: object) -> None:
            raise Stop

    monkeypatch.setattr(demo, "EmbeddedBroker", NoBroker)
    monkeypatch.setattr(demo.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    with pytest.raises(Stop):
        demo.run_demo(_settings(tmp_path), rate=1.0, duration=1.0)
    assert capsys.readouterr().out.splitlines()[0] == "Board: http://127.0.0.1:6099/"


def test_the_address_and_the_demos_own_requests_carry_the_read_credentials(tmp_path: Path) -> None:
    token = "demo-read-token-0123456789"
    with_token = _settings(tmp_path, REVPULSE_READ_TOKEN=token)
    assert board_line(with_token) == "Board: http://127.0.0.1:6099/?token=<REVPULSE_READ_TOKEN>"
    assert read_headers(with_token) == {"Authorization": f"Bearer {token}"}
    basic = _settings(tmp_path, REVPULSE_READ_USER="ann", REVPULSE_READ_PASSWORD="a-long-password-123")
    assert board_line(basic) == "Board: http://127.0.0.1:6099/ (log in as REVPULSE_READ_USER)"
    pair = base64.b64encode(b"ann:a-long-password-123").decode()
    assert read_headers(basic) == {"Authorization": f"Basic {pair}"}
    assert read_headers(_settings(tmp_path)) == {}


def test_the_story_history_at_once_then_accelerated_then_the_wall_clock() -> None:
    assert HISTORY_DAYS + ACCELERATED_DAYS >= 120, "months of trend on the board"
    assert 60 <= ACCELERATED_DAYS * 86_400 / ACCELERATION <= 600, "the accelerated days take minutes, not hours"
    now = [100.0]
    pacer = Pacer(T0, accelerated_days=2, speed=1440.0, clock=lambda: now[0])
    assert [pacer.phase(T0 - 3 * DAY_MS), pacer.phase(T0 - 2 * DAY_MS), pacer.phase(T0)] == [
        "history",
        "accelerated",
        "live",
    ]
    assert pacer.delay(T0 - 100 * DAY_MS, T0) == 0.0
    # The accelerated days start with their first event: a day of event time is 60 s at 1440x.
    assert pacer.delay(T0 - 2 * DAY_MS, T0) == 0.0
    assert pacer.delay(T0 - DAY_MS, T0) == pytest.approx(60.0)
    now[0] += 50.0
    assert pacer.delay(T0 - DAY_MS, T0) == pytest.approx(10.0)
    assert pacer.delay(T0 - 2 * DAY_MS + 1000, T0) == 0.0, "a late event goes at once"
    # Then each event when the wall clock reaches it: an occurred_at is never in the future.
    assert pacer.delay(T0 + 5_000, T0 + 1_000) == pytest.approx(4.0)
    assert pacer.delay(T0 + 5_000, T0 + 9_000) == 0.0


def test_the_summary_line_tells_how_far_the_data_reached() -> None:
    exposition = '# HELP x\nrevpulse_watermark_timestamp_seconds 1.7e+09\nrevpulse_info{a="b"} 1.0\n'
    assert watermark(exposition) == "2023-11-14 22:13"
    assert watermark("revpulse_watermark_timestamp_seconds 0.0\n") == "-"
