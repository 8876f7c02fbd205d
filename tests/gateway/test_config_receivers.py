"""``[receivers.dc09]`` configuration: keys per account, window, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecare.gateway.config import load_config
from telecare.gateway.errors import ConfigError


def test_dc09_section(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        "[receivers.dc09]\nenabled = true\nport = 12000\nudp = false\n"
        'keys = { "ab12" = "000102030405060708090a0b0c0d0e0f" }\nwindow_past_s = 60\n'
    )
    dc09 = load_config(path).receivers.dc09
    assert (dc09.enabled, dc09.port, dc09.tcp, dc09.udp) == (True, 12000, True, False)
    assert dc09.window_past_s == 60.0
    assert dc09.window_future_s == 20.0
    assert dc09.key_for("AB12") == bytes(range(16))
    assert dc09.key_for("1234") is None
    assert load_config(None).receivers.dc09.enabled is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('keys = { "1234" = "abc" }', "receivers.dc09.keys.1234' is not an AES key"),
        ('keys = { "1234" = "00" }', "receivers.dc09.keys.1234' is not an AES key"),
        ("keys = 5", "'receivers.dc09.keys' in .* must be a table of strings"),
        ("port = 'x'", "'receivers.dc09.port' has value 'x'"),
        ("colour = 1", "Unknown config key 'receivers.dc09.colour'"),
    ],
)
def test_dc09_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f"[receivers.dc09]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)
