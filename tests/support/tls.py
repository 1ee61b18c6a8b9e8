"""TLS for tests: a CA and certificates made with the openssl command, and Debian's stunnel in front of a broker."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (make tools installs it)")
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Pem:
    """A self-signed CA certificate and its key (EC P-256, valid two days)."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = Pem(directory / f"{name}.pem", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(pem.key), "-out", str(pem.cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pem


def make_cert(directory: Path, ca: Pem, name: str, names: tuple[str, ...] = ("IP:127.0.0.1",)) -> Pem:
    """A certificate signed by `ca` for `names` (subjectAltName entries), for servers and clients alike."""
    pem = Pem(directory / f"{name}.pem", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={','.join(names)}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth,clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(pem.key), "-out", str(csr), "-subj", f"/CN={name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
        "-out", str(pem.cert), "-days", "2", "-extfile", str(extensions),
    )  # fmt: skip
    return pem


def _wait_listening(host: str, port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"stunnel exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"stunnel not listening on {host}:{port} within {timeout}s:\n{log.read_text(errors='replace')}")


@contextlib.contextmanager
def stunnel(directory: Path, accept: int, connect: int, server: Pem, *, client_ca: Pem | None = None) -> Iterator[Path]:
    """Debian's stunnel terminating TLS on 127.0.0.1:`accept` in front of the plaintext 127.0.0.1:`connect`, with
    `server`'s certificate; with `client_ca`, it also requires a client certificate signed by that CA. Yields
    the path of its log."""
    binary = shutil.which("stunnel4") or shutil.which("stunnel")
    if binary is None:
        pytest.skip("stunnel4 is not installed (make tools installs it: apt-get install stunnel4)")
    config = directory / f"stunnel-{accept}.conf"
    log = directory / f"stunnel-{accept}.log"
    lines = [
        "foreground = yes",
        f"output = {log}",
        "debug = notice",
        "pid =",
        "[kafka]",
        f"accept = 127.0.0.1:{accept}",
        f"connect = 127.0.0.1:{connect}",
        f"cert = {server.cert}",
        f"key = {server.key}",
    ]
    if client_ca is not None:
        lines += [f"CAfile = {client_ca.cert}", "verifyChain = yes", "requireCert = yes"]
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [binary, str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        log.touch()
        _wait_listening("127.0.0.1", accept, process, log)
        yield log
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
