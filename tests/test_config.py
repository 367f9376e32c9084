"""The config fails at start with a message that names the offending key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from monitor.config import load_config, load_config_text
from monitor.errors import ConfigError
from monitor.transport import ConfluentTransport

MINIMAL = "models:\n  - {name: digits, version: 1, profile: digits.profile.npz}\n"


def test_defaults_and_relative_profile_paths(tmp_path: Path) -> None:
    path = tmp_path / "inferwatch.yaml"
    path.write_text(MINIMAL)
    config = load_config(path)
    (model,) = config.models
    assert (model.key, model.profile) == ("digits/1", str(tmp_path / "digits.profile.npz"))
    assert config.kafka is None  # the embedded bus is the default
    assert (config.window.size, config.detect.alpha, config.detect.correction) == (500, 0.01, "bonferroni")


@pytest.mark.parametrize(("text", "names"), [
    (MINIMAL + "window: {size: 0}", "window.size"),
    (MINIMAL + "windw: {size: 10}", "windw"),
    (MINIMAL + "detect: {alpha: 1.5}", "detect.alpha"),
    (MINIMAL + "detect: {correction: holm}", "detect.correction"),
    (MINIMAL + "alerts: {webhook: {url: 'ftp://x'}}", "alerts.webhook.url"),
    (MINIMAL + "kafka: {group: g}", "bootstrap"),
    (MINIMAL + "server: {port: 70000}", "server.port"),
    ("models: [{name: a, profile: p}]", "version"),
    ("models:\n  - {name: a, version: 1, profile: p}\n  - {name: a, version: '1', profile: q}\n", "a/1"),
    ("window: {size: 10}", "models"),
    ("just a string", "mapping"),
    ("models: [\n", "YAML"),
])
def test_bad_config_names_the_key(text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.").replace("[", r"\[")):
        load_config_text(text)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_a_grafana_section_with_defaults() -> None:
    grafana = load_config_text(MINIMAL + "grafana: {url: 'http://grafana:3000', token_file: /run/grafana}").grafana
    assert grafana is not None
    assert (grafana.url, grafana.token_file, grafana.dashboard_uid_prefix, grafana.snapshot_expires_s,
            grafana.datasource_url) == ("http://grafana:3000", "/run/grafana", "inferwatch", 30 * 86_400, None)
    assert load_config_text(MINIMAL).grafana is None  # no section: nothing is sent to Grafana


@pytest.mark.parametrize(("section", "names"), [
    ("{token_file: /t}", "url"),
    ("{url: 'grafana:3000', token_file: /t}", "grafana.url"),
    ("{url: 'http://g'}", "grafana.token_file"),
    ("{url: 'http://g', token_file: /t, token_env: T}", "one of token_file, token_env"),
    ("{url: 'http://g', token_file: /t, dashboard_uid_prefix: 'has space'}", "grafana.dashboard_uid_prefix"),
    ("{url: 'http://g', token_file: /t, dashboard_uid_prefix: " + "p" * 30 + "}", "grafana.dashboard_uid_prefix"),
    ("{url: 'http://g', token_file: /t, snapshot_expires_s: -1}", "grafana.snapshot_expires_s"),
    ("{url: 'http://g', token_file: /t, timeout_s: 0}", "grafana.timeout_s"),
    ("{url: 'http://g', token_file: /t, datasource_url: prom}", "grafana.datasource_url"),
    ("{url: 'http://g', token_file: /t, colour: red}", "colour"),
])
def test_bad_grafana_config_names_the_key(section: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        load_config_text(MINIMAL + "grafana: " + section)


def test_kafka_client_defaults_to_kafka_python_and_takes_confluent() -> None:
    kafka = load_config_text(MINIMAL + "kafka: {bootstrap: 'h:9092'}").kafka
    assert kafka is not None and kafka.client == "kafka-python"
    pytest.importorskip("confluent_kafka", reason="the confluent backend needs inferwatch[confluent]")
    chosen = load_config_text(MINIMAL + "kafka: {bootstrap: 'h:9092', client: confluent}").kafka
    assert chosen is not None and chosen.client == "confluent"


def test_an_unknown_kafka_client_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"'librdkafka' at kafka\.client$"):
        load_config_text(MINIMAL + "kafka: {bootstrap: 'h:9092', client: librdkafka}")


def test_kafka_client_confluent_without_the_package_fails_with_the_install_hint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # what an import finds when it is not installed
    with pytest.raises(ConfigError, match=r"kafka\.client is confluent .*pip install 'inferwatch\[confluent\]'"):
        load_config_text(MINIMAL + "kafka: {bootstrap: 'h:9092', client: confluent}")
    with pytest.raises(ConfigError, match=r"kafka\.client: confluent .*pip install 'inferwatch\[confluent\]'"):
        ConfluentTransport("h:9092")  # made directly, it says the same
