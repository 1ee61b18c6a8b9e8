"""The board's page as served (agents/board.py): one response with its code inline, allowed by hash in the
Content-Security-Policy, behind the read credentials, the token also taken as `?token=` there and only there.
(The page in a real browser: tests/integration/test_board.py.)"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest

from revpulse.agents.board import build_page
from tests.support.paths import ROOT
from tests.unit.agents.test_web_access import BEARER, TOKEN, get, serve


def _inline(body: str, element: str) -> str:
    (text,) = re.findall(rf"<{element}>(.*?)</{element}>", body, flags=re.S)
    return text


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_holds_its_code_inline_and_the_policy_allows_exactly_that() -> None:
    page = build_page()
    body = page.body.decode()
    script, style = _inline(body, "script"), _inline(body, "style")
    assert script == (ROOT / "agents" / "board" / "board.js").read_text()
    assert style == (ROOT / "agents" / "board" / "board.css").read_text()
    policy = dict(part.split(" ", 1) for part in page.headers["Content-Security-Policy"].split("; "))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == _hash(script) and policy["style-src"] == _hash(style)
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    # Nothing from elsewhere: no URL of another origin in the page.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", body)
    assert page.headers["Cache-Control"] == "private, no-cache" and page.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.asyncio
async def test_served_behind_the_read_credentials_with_the_token_also_in_the_address(tmp_path: Path) -> None:
    async with serve(tmp_path, REVPULSE_READ_TOKEN=TOKEN) as (base, _):
        assert (await get(base, "/"))[0] == 401
        assert (await get(base, "/?token=not-the-token-0123456789"))[0] == 401
        assert (await get(base, "/?token="))[0] == 401
        status, headers, body = await get(base, f"/?token={TOKEN}")
        assert status == 200 and body == build_page().body
        assert headers["content-type"] == ["text/html; charset=utf-8"]
        assert "script-src 'sha256-" in headers["content-security-policy"][0]
        assert (await get(base, "/", BEARER))[0] == 200
        # Revalidation: the same page is a 304.
        status, _, body = await get(base, "/", BEARER | {"If-None-Match": headers["etag"][0]})
        assert (status, body) == (304, b"")
        # `?token=` opens the board's page only.
        for path in ("/metrics", "/api/metrics", "/api/history"):
            assert (await get(base, f"{path}?token={TOKEN}"))[0] == 401, path


@pytest.mark.asyncio
async def test_open_without_read_credentials(tmp_path: Path) -> None:
    async with serve(tmp_path) as (base, _):
        status, _, body = await get(base, "/")
        assert status == 200 and b"<title>RevPulse board</title>" in body
