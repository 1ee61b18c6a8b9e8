"""The live board at `/` (issue 15, item 3): one page, no internet needed, reading `/api/metrics` and `/api/history`.

The page is agents/board/index.html with board.css and board.js put inline, served as one response. One response,
because the page is behind the read credentials like every other path (web_access.py): a browser given basic
auth sends it for every request of the origin, but a bearer token reaches the page only as `/?token=…` (a
browser sends no header when it navigates), and a separate script or stylesheet would be requested without it.
Inline code is allowed by its SHA-256 in the Content-Security-Policy: the page runs its own code and nothing
else, talks only to its own origin, and cannot be framed.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from importlib import resources

import faust
from aiohttp.web import Response

BOARD_PATH = "/"
_PLACEHOLDERS = {"css": "/*BOARD_CSS*/", "js": "/*BOARD_JS*/"}


def _read(name: str) -> str:
    # An HTML parser turns CR LF into LF before the browser hashes inline code: hash what it will see.
    return resources.files("revpulse.agents").joinpath("board", name).read_text("utf-8").replace("\r\n", "\n")


def _source_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


@dataclass(frozen=True)
class Page:
    body: bytes
    headers: dict[str, str]
    etag: str


def build_page() -> Page:
    """The board's HTML with its stylesheet and script inline, and the headers it is served with."""
    html, css, js = _read("index.html"), _read("board.css"), _read("board.js")
    if "</style" in css.lower() or "</script" in js.lower() or "<!--" in js:
        raise ValueError("the board's inline code must not close its own element")
    for key, placeholder in _PLACEHOLDERS.items():
        if html.count(placeholder) != 1:
            raise ValueError(f"index.html must hold {placeholder} once ({key})")
    body = html.replace(_PLACEHOLDERS["css"], css).replace(_PLACEHOLDERS["js"], js).encode("utf-8")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"script-src {_source_hash(js)}",
            f"style-src {_source_hash(css)}",
            "connect-src 'self'",
            "img-src 'self' data:",  # data: for the inline favicon (a request for /favicon.ico would be a 404)
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        )
    )
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {
        "Content-Security-Policy": policy,
        # Revalidated on every load (a 304 when unchanged): an upgraded worker serves its own board at once. Private:
        # the page is behind the read credentials, so no shared cache keeps it.
        "Cache-Control": "private, no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        # The address may carry ?token=: it is never sent anywhere as a referrer.
        "Referrer-Policy": "no-referrer",
    }
    return Page(body, headers, etag)


def register_board(app: faust.App) -> None:
    """Serve the board at `/` on the worker's web port."""
    page = build_page()

    @app.page(BOARD_PATH)
    async def board(web: faust.web.Web, request: faust.web.Request) -> Response:
        if page.etag in request.headers.get("If-None-Match", ""):
            return Response(status=304, headers=page.headers)
        return Response(body=page.body, content_type="text/html", charset="utf-8", headers=page.headers)
