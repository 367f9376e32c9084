"""deploy/prometheus/: the rules parse (``promtool check rules``), their unit tests pass (``promtool test rules``:
every alert shown firing and not firing), and the example configuration that loads them is valid."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="needs promtool: apt-get install prometheus "
                                                          "(make test installs it)")


def promtool(*args: str) -> str:
    assert PROMTOOL is not None
    done = subprocess.run([PROMTOOL, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_the_rules_parse() -> None:
    assert "SUCCESS" in promtool("check", "rules", "rules.yml")


def test_the_rules_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "rules_test.yml")


def test_the_example_configuration_loads_the_rules() -> None:
    output = promtool("check", "config", "prometheus.yml")
    assert "rules.yml" in output and "SUCCESS" in output


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    rules = yaml.safe_load((DEPLOY / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((DEPLOY / "rules_test.yml").read_text())["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert alerts and alerts == firing == quiet


def test_the_rules_read_only_metrics_inferwatch_exports() -> None:
    """A renamed metric must not leave a rule reading a series that no longer exists."""
    from prometheus_client import CollectorRegistry, generate_latest

    from collectors.producer import producer_metrics
    from collectors.sidecar.metrics import sidecar_metrics
    from monitor.metrics import daemon_metrics

    exported: set[str] = set()
    for make in (daemon_metrics, sidecar_metrics, producer_metrics):
        registry = CollectorRegistry()
        make(registry)
        exported |= set(re.findall(r"^# TYPE (\S+) ", generate_latest(registry).decode(), re.MULTILINE))
    text = (DEPLOY / "rules.yml").read_text()
    # metric names, not the inferwatch_ part of a recording rule's level:metric:operation name
    used = {re.sub(r"_(bucket|count|sum)$", "", name)
            for name in re.findall(r"(?<![:\w])inferwatch_[a-z0-9_]+\b(?!:)", text)}
    assert used and used - exported == set()
