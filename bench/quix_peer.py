"""The Quix Streams peer (`bench.quix_app`) run beside RevPulse: its venv, made once, and one timed run.

The venv lives in the bench's cache dir (`quix-venv`, Quix Streams `QUIX_VERSION` from PyPI). A peer that cannot
be installed or run is reported as such, with its reason: the other figures of the run stand without it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from revpulse.settings import Topics

QUIX_VERSION = "3.28.0"
APP = Path(__file__).with_name("quix_app.py")


def venv_python(cache_dir: Path) -> Path:
    """The peer venv's Python, creating the venv and installing Quix Streams first if needed."""
    venv = cache_dir / "quix-venv"
    python = venv / "bin" / "python"
    marker = venv / f"quixstreams-{QUIX_VERSION}"
    if not marker.exists():
        print(f"installing quixstreams {QUIX_VERSION} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        install = [str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"]
        subprocess.run(install, check=True, capture_output=True)
        marker.touch()
    return python


def quix_peer(bootstrap: str, topics: Topics, total: int, cache_dir: Path, timeout: float) -> dict[str, Any]:
    """Events/s of the peer over the input topics, from its first event to its last; or why there is none."""
    try:
        python = venv_python(cache_dir)
        with tempfile.TemporaryDirectory(prefix="bench-quix-") as state:
            command = [str(python), str(APP), bootstrap, ",".join(topics.inputs), str(total), state]
            done = subprocess.run(command, capture_output=True, timeout=timeout, check=True)
        result = orjson.loads(done.stdout.splitlines()[-1])  # a ValueError if not JSON
        events, seconds = int(result["events"]), max(float(result["seconds"]), 1e-9)
    except (OSError, subprocess.SubprocessError, IndexError, KeyError, TypeError, ValueError) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        return {"error": f"{type(exc).__name__}: {stderr.decode(errors='replace')[-300:] or exc}"}
    return {
        "version": QUIX_VERSION,
        "aggregate": "per topic and key, a 1-hour tumbling window of event time: count and sum, emitted at close",
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_second": round(events / seconds),
    }
