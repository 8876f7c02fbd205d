"""Configuration: TOML plus environment, errors that name the key and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from telecare.gateway.config import Config, load_config
from telecare.gateway.errors import ConfigError


def test_defaults_are_the_embedded_store() -> None:
    config = load_config(None, {})
    assert config == Config()
    assert config.store.backend == "sqlite"
    assert config.mqtt.clean_session is False  # persistent session by default


def test_toml_then_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[mqtt]\nhost = "broker.local"\nport = 8883\ntls = true\n'
        '[store]\nbackend = "postgres"\ndsn = "postgresql://db/telecare"\n'
        '[[serial]]\nport = "/dev/ttyUSB0"\ncodec = "cms50d"\ndevice_id = "oxi-1"\n'
    )
    env = {"TELECARE_MQTT__PORT": "1884", "TELECARE_STORE__TIMESCALE": "false", "HOME": "/x"}
    config = load_config(path, env)
    assert config.mqtt.host == "broker.local"
    assert config.mqtt.port == 1884
    assert config.mqtt.tls is True
    assert config.store.backend == "postgres"
    assert config.store.timescale is False
    assert config.serial[0].codec == "cms50d"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TELECARE_MQTT__PORT": "abc"}, "Config 'mqtt.port' has value 'abc'. Not a valid int."),
        ({"TELECARE_MQTT__TLS": "perhaps"}, "Config 'mqtt.tls' has value 'perhaps'. Not a valid"),
        ({"TELECARE_MQTT__PROT": "1"}, "Unknown config key 'mqtt.prot'"),
        ({"TELECARE_NOPE__X": "1"}, "Unknown config key 'nope'"),
    ],
)
def test_errors_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, env)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\nport = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})


def test_ingest_time_bounds(tmp_path: Path) -> None:
    """Issue 9 finding 6: the bounds on device timestamps, from TOML and environment."""
    defaults = load_config(None, {}).ingest
    assert defaults.max_future_skew_s == 300
    assert defaults.max_age_s == 14 * 86400
    path = tmp_path / "gw.toml"
    path.write_text("[ingest]\nmax_future_skew_s = 120\nmax_age_s = 86400\n")
    config = load_config(path, {"TELECARE_INGEST__MAX_AGE_S": "604800"})
    assert config.ingest.max_future_skew_s == 120
    assert config.ingest.max_age_s == 604800
    with pytest.raises(ConfigError, match=r"Config 'ingest\.max_age_s' has value 0\.0\. Must be"):
        load_config(None, {"TELECARE_INGEST__MAX_AGE_S": "0"})


def test_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "docs/examples/gateway.toml"
    assert load_config(example, {}).ingest.max_age_s == 14 * 86400


def test_scaip_receiver_keys(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        '[receivers.scaip]\nenabled = true\nhost = "0.0.0.0"\nport = 5070\nudp = false\n'
        "max_in_flight = 32\n"
    )
    scaip = load_config(path, {}).receivers.scaip
    assert (scaip.enabled, scaip.host, scaip.port, scaip.udp, scaip.tcp) == (
        True,
        "0.0.0.0",
        5070,
        False,
        True,
    )
    assert scaip.max_in_flight == 32
    path.write_text("[receivers.scaip]\nenabled = true\ntls = true\n")
    with pytest.raises(ConfigError, match=r"'receivers\.scaip\.tls' is true but"):
        load_config(path, {})
    path.write_text('[receivers.scaip]\nport = "sip"\n')
    with pytest.raises(ConfigError, match=r"'receivers\.scaip\.port' has value 'sip'"):
        load_config(path, {})
