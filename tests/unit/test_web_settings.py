"""Settings of the web port (bind address, TLS, Faust's pages, read credentials), the ingest replay cache, and where
a `.env` is read from."""

from __future__ import annotations

from pathlib import Path

import pytest

from revpulse.settings import Settings, SettingsError
from tests.support.web_tls import make_server_certificate

TOKEN = "0123456789abcdef0123456789abcdef"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert (s.web.host, s.web.debug, s.web.certfile, s.web.keyfile) == ("127.0.0.1", False, None, None)
    assert (s.web.read_token, s.web.read_user, s.web.read_password) == (None, None, None)
    assert (s.web.read_protected, s.web.tls) == (False, False)
    assert (s.ingest.replay_window, s.ingest.replay_cache) == (300.0, 50_000)


def test_values_parsed(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    s = Settings.from_env(
        {
            "REVPULSE_WEB_HOST": "0.0.0.0",
            "REVPULSE_WEB_DEBUG": "true",
            "REVPULSE_READ_TOKEN_FILE": str(token_file),
            "REVPULSE_READ_USER": "grafana",
            "REVPULSE_READ_PASSWORD": "p" * 12,
            "REVPULSE_INGEST_REPLAY_WINDOW": "10m",
            "REVPULSE_INGEST_REPLAY_CACHE": "1000",
        }
    )
    assert (s.web.host, s.web.debug, s.web.read_token) == ("0.0.0.0", True, TOKEN)
    assert (s.web.read_user, s.web.read_password, s.web.read_protected) == ("grafana", "p" * 12, True)
    assert (s.ingest.replay_window, s.ingest.replay_cache) == (600.0, 1000)
    assert TOKEN not in repr(s) and "p" * 12 not in repr(s)
    for host in ("::", "::1", "localhost", "worker-1.internal"):
        assert Settings.from_env({"REVPULSE_WEB_HOST": host}).web.host == host
    assert Settings.from_env({"REVPULSE_READ_TOKEN": TOKEN}).web.read_token == TOKEN


def test_tls_pair(tmp_path: Path) -> None:
    cert = make_server_certificate(tmp_path / "tls")
    s = Settings.from_env({"REVPULSE_WEB_CERTFILE": str(cert.cert), "REVPULSE_WEB_KEYFILE": str(cert.key)})
    assert (s.web.certfile, s.web.keyfile, s.web.tls) == (cert.cert, cert.key, True)
    # One file holding both.
    both = tmp_path / "both.pem"
    both.write_text(cert.cert.read_text() + cert.key.read_text())
    assert Settings.from_env({"REVPULSE_WEB_CERTFILE": str(both)}).web.tls


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REVPULSE_WEB_HOST": "any"}, None),  # a host name: accepted (checked below not to fail)
        ({"REVPULSE_WEB_HOST": "0.0.0.0:6066"}, "REVPULSE_WEB_HOST"),
        ({"REVPULSE_WEB_HOST": "http://x"}, "REVPULSE_WEB_HOST"),
        ({"REVPULSE_WEB_DEBUG": "maybe"}, "REVPULSE_WEB_DEBUG"),
        ({"REVPULSE_WEB_CERTFILE": "/no/such/cert.pem"}, "REVPULSE_WEB_CERTFILE"),
        ({"REVPULSE_WEB_KEYFILE": __file__}, "REVPULSE_WEB_CERTFILE"),
        ({"REVPULSE_READ_TOKEN": "short"}, "REVPULSE_READ_TOKEN"),
        ({"REVPULSE_READ_TOKEN": "a token with spaces in it"}, "REVPULSE_READ_TOKEN"),
        ({"REVPULSE_READ_TOKEN": "change-me-to-a-long-random-token"}, "REVPULSE_READ_TOKEN"),
        ({"REVPULSE_READ_TOKEN": "CHANGEME0123456789abcdef"}, "REVPULSE_READ_TOKEN"),
        ({"REVPULSE_READ_TOKEN": TOKEN, "REVPULSE_READ_TOKEN_FILE": __file__}, "REVPULSE_READ_TOKEN"),
        ({"REVPULSE_READ_TOKEN_FILE": "/no/such/token"}, "REVPULSE_READ_TOKEN_FILE"),
        ({"REVPULSE_READ_USER": "grafana"}, "REVPULSE_READ_PASSWORD"),
        ({"REVPULSE_READ_PASSWORD": "p" * 12}, "REVPULSE_READ_USER"),
        ({"REVPULSE_READ_USER": "a:b", "REVPULSE_READ_PASSWORD": "p" * 12}, "REVPULSE_READ_USER"),
        ({"REVPULSE_READ_USER": "grafana", "REVPULSE_READ_PASSWORD": "short"}, "REVPULSE_READ_PASSWORD"),
        ({"REVPULSE_READ_USER": "grafana", "REVPULSE_READ_PASSWORD": "change_me_please"}, "REVPULSE_READ_PASSWORD"),
        ({"REVPULSE_INGEST_REPLAY_WINDOW": "0"}, "REVPULSE_INGEST_REPLAY_WINDOW"),
        ({"REVPULSE_INGEST_REPLAY_WINDOW": "2d"}, "REVPULSE_INGEST_REPLAY_WINDOW"),
        ({"REVPULSE_INGEST_REPLAY_CACHE": "10"}, "REVPULSE_INGEST_REPLAY_CACHE"),
        ({"REVPULSE_INGEST_REPLAY_CACHE": "lots"}, "REVPULSE_INGEST_REPLAY_CACHE"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str | None) -> None:
    if named is None:
        Settings.from_env(env)
        return
    with pytest.raises(SettingsError) as error:
        Settings.from_env(env)
    assert str(error.value).startswith(f"{named}:"), error.value
    assert "\n" not in str(error.value)
    for value in env.values():
        if "change" in value.lower():
            assert value not in str(error.value), "a secret is never repeated in an error"


def test_secret_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(SettingsError, match=r"^REVPULSE_READ_TOKEN_FILE: .* is empty$"):
        Settings.from_env({"REVPULSE_READ_TOKEN_FILE": str(empty)})
    example = tmp_path / "example"
    example.write_text("change-me-0123456789abcdef\n")
    with pytest.raises(SettingsError, match=r"^REVPULSE_READ_TOKEN_FILE: still the example value"):
        Settings.from_env({"REVPULSE_READ_TOKEN_FILE": str(example)})
    password = tmp_path / "password"
    password.write_text("a password: with spaces\r\n")
    s = Settings.from_env({"REVPULSE_READ_USER": "u", "REVPULSE_READ_PASSWORD_FILE": str(password)})
    assert s.web.read_password == "a password: with spaces"


def test_a_dotenv_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("REVPULSE_CURRENCY=EUR\n")
    assert Settings.from_env({"REVPULSE_DATA_DIR": str(tmp_path / "data")}).currency == "EUR"
    assert Settings.from_env({}).currency == "EUR"  # the default data dir, ./data, is below it


def test_a_dotenv_in_the_data_dir_is_not_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 5: a worker whose working directory is its data dir (the old image) ignores a `.env` found there."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / ".env").write_text("REVPULSE_CURRENCY=EUR\n")
    (data / "sub" / ".env").write_text("REVPULSE_CURRENCY=EUR\n")
    for cwd in (data, data / "sub"):
        monkeypatch.chdir(cwd)
        assert Settings.from_env({"REVPULSE_DATA_DIR": str(data)}).currency == "USD"
        assert "it is in the data dir" in capsys.readouterr().err
