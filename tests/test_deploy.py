"""Offline checks of deploy/: the Helm chart, the images, the compose stack and the Kafka topics.

Nothing here needs a cluster or Docker. The chart is linted and rendered with ``helm`` (built from the Go module
proxy by ``make deploy-tools`` into ``~/.cache/inferwatch/bin``, or ``$HELM``), its output validated against the
Kubernetes 1.29 and 1.33 schemas (``kubernetes-validate``, strict: unknown fields are errors) and, for the
Prometheus Operator kinds, against their CRDs' ``openAPIV3Schema`` (tests/data, vendored). Without helm or
hadolint these tests skip, visibly; with ``INFERWATCH_REQUIRE_DEPLOY_TOOLS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from monitor.cli import _parser
from monitor.config import load_config_text

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "inferwatch"
DATA = Path(__file__).resolve().parent / "data"
DOCKER = DEPLOY / "docker"
REQUIRE_TOOLS = os.environ.get("INFERWATCH_REQUIRE_DEPLOY_TOOLS") == "1"
KUBE_VERSIONS = ("1.29.0", "1.33.0")
RELEASE, NAMESPACE = "inferwatch", "inferwatch"
# values files rendered: the defaults, everything on, the embedded bus (no Kafka)
VALUES = {"default": None, "all": CHART / "ci" / "all-values.yaml", "embedded": CHART / "ci" / "embedded-values.yaml"}
CRD_KINDS = {"ServiceMonitor": "crd-servicemonitor.json", "PodMonitor": "crd-podmonitor.json",
             "PrometheusRule": "crd-prometheusrule.json"}
TOPICS = {"inferwatch.events", "inferwatch.feedback", "inferwatch.results", "inferwatch.deadletter",
          "inferwatch.alerts"}


def _missing_tool(what: str) -> None:
    message = f"{what} (make deploy-tools builds helm; hadolint comes with the test extra)"
    if REQUIRE_TOOLS:
        pytest.fail(f"INFERWATCH_REQUIRE_DEPLOY_TOOLS=1 and {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def helm() -> str:
    path = os.environ.get("HELM") or str(Path.home() / ".cache" / "inferwatch" / "bin" / "helm")
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        _missing_tool(f"no helm at {path}")
    return path


@pytest.fixture(scope="module")
def hadolint() -> str:
    path = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        _missing_tool("no hadolint")
    assert path is not None
    return path


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=60, check=False)


def _template(helm: str, values: Path | None = None, *extra: str,
              kube: str = KUBE_VERSIONS[0]) -> subprocess.CompletedProcess[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube, *extra]
    if values is not None:
        args += ["-f", str(values)]
    return _helm(helm, *args)


@pytest.fixture(scope="module")
def rendered(helm: str) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Each values file's `helm template` output: (text, documents)."""
    out = {}
    for name, values in VALUES.items():
        result = _template(helm, values)
        assert result.returncode == 0, result.stderr
        out[name] = (result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d])
    return out


def _find(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]["spec"]


# ------------------------------------------------------------------------------------------------- helm


@pytest.mark.parametrize("values", list(VALUES))
def test_helm_lint(helm: str, values: str) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSIONS[0]]
    if VALUES[values] is not None:
        args += ["-f", str(VALUES[values])]
    result = _helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_chart_declares_kubernetes_floor(helm: str) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["kubeVersion"] == ">=1.29.0-0"
    result = _template(helm, kube="1.28.0")  # native sidecars need 1.29
    assert result.returncode != 0 and "kubeVersion" in result.stderr


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("values", list(VALUES))
def test_rendered_chart_validates(rendered: dict[str, Any], values: str, kube: str) -> None:
    """Built-in kinds against Kubernetes' own schemas, strict; CRD kinds against their CRDs' schemas."""
    _, docs = rendered[values]
    assert docs
    for doc in docs:
        where = f"{doc['kind']}/{doc['metadata']['name']} ({values}, {kube})"
        if doc["kind"] in CRD_KINDS:
            _crd_validator(doc["kind"]).validate(doc)
            continue
        try:
            kubernetes_validate.validate(doc, kube, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where}: {exc.message}")


def test_validators_reject_mistakes(rendered: dict[str, Any]) -> None:
    """The validators above are not vacuous: an unknown field fails, in a built-in kind and in a CRD kind."""
    _, docs = rendered["all"]
    deployment = copy.deepcopy(_find(docs, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readonlyRootFilesystem"] = True  # misspelt
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)
    monitor = copy.deepcopy(_find(docs, "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["bearerTokenSecrett"] = {"name": "x", "key": "y"}
    with pytest.raises(jsonschema.ValidationError):
        _crd_validator("ServiceMonitor").validate(monitor)
    rule = copy.deepcopy(_find(docs, "PrometheusRule")[0])
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = rule["spec"]["groups"][0]["rules"][0].pop("expr")
    with pytest.raises(jsonschema.ValidationError):
        _crd_validator("PrometheusRule").validate(rule)


def test_every_kind_is_validated(rendered: dict[str, Any]) -> None:
    kinds = {d["kind"] for _, docs in rendered.values() for d in docs}
    assert kinds == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy",
                     "ServiceMonitor", "PodMonitor", "PrometheusRule"}


@cache
def _crd_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = _strict(json.loads((DATA / CRD_KINDS[kind]).read_text()))
    schema["properties"]["metadata"] = {"type": "object"}
    return jsonschema.Draft7Validator(schema)


def _strict(schema: Any) -> Any:
    """A CRD's structural schema prunes unknown fields (kubectl --validate=strict rejects them): refuse them,
    except where the schema keeps unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def test_replicas_beyond_partitions_refused(helm: str) -> None:
    result = _template(helm, None, "--set", "replicas=7", "--set", "kafka.partitions=6")
    assert result.returncode != 0
    assert "replicas (7) must not exceed kafka.partitions (6)" in result.stderr
    assert _template(helm, None, "--set", "replicas=6", "--set", "kafka.partitions=6").returncode == 0
    embedded = _template(helm, VALUES["embedded"], "--set", "replicas=2")
    assert embedded.returncode != 0 and "must be 1 without Kafka" in embedded.stderr
    nobody = _template(helm, None, "--set", "server.tokenSecret.name=")
    assert nobody.returncode != 0 and "server.tokenSecret.name is required" in nobody.stderr


def test_values_schema_enforced_by_helm(helm: str) -> None:
    result = _template(helm, None, "--set-string", "replicas=two")
    assert result.returncode != 0 and "/replicas" in result.stderr
    result = _template(helm, None, "--set", "replicaz=2")
    assert result.returncode != 0 and "replicaz" in result.stderr


def _values_validator() -> jsonschema.Draft7Validator:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    return jsonschema.Draft7Validator(schema)


def test_values_schema_is_strict() -> None:
    validator = _values_validator()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    validator.validate(defaults)
    for path in VALUES.values():
        if path is not None:
            validator.validate({**defaults, **yaml.safe_load(path.read_text())})

    def refused(change: dict[str, Any]) -> bool:
        return not validator.is_valid(_merge(copy.deepcopy(defaults), change))

    assert refused({"replicas": "two"})
    assert refused({"replicas": 1.5})
    assert refused({"kafka": {"partitions": "6"}})
    assert refused({"kafka": {"partition": 6}})  # unknown key
    assert refused({"nope": True})
    assert refused({"alertChannels": [{"name": "s", "type": "slack"}]})  # slack without its secret
    assert refused({"alertChannels": [{"name": "w", "type": "webhook", "secret": {"name": "w", "key": "k"}}]})
    assert refused({"alertChannels": [{"name": "p", "type": "pagerduty", "secret": {"name": "p", "key": "k"},
                                       "settings": {"routing_key_file": "/x"}}]})
    assert refused({"config": {"server": {"host": "0.0.0.0"}}})  # the chart owns server, kafka, models
    assert refused({"models": []})
    assert refused({"sidecar": {"models": {"charlm": "charlm"}}})  # MODEL/VERSION
    assert not refused({"replicas": 3})


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


# --------------------------------------------------------------------------------------- what it renders


def test_native_sidecar(rendered: dict[str, Any]) -> None:
    for values in ("all", "embedded"):
        _, docs = rendered[values]
        pod = _find(docs, "Deployment", "example-model")[0]["spec"]["template"]
        sidecars = pod["spec"]["initContainers"]
        assert [c["name"] for c in sidecars] == ["inferwatch-sidecar"]
        assert sidecars[0]["restartPolicy"] == "Always"
        assert "inferwatch-sidecar" not in [c["name"] for c in pod["spec"]["containers"]]
        assert pod["metadata"]["labels"]["inferwatch.io/sidecar"] == "true"
        args = sidecars[0]["args"]
        parsed = _parser().parse_args(["sidecar", *args])  # the sidecar's own CLI takes these arguments
        assert parsed.admin_token_file == "/var/run/secrets/inferwatch/admin/token"
        if values == "embedded":
            assert parsed.ingest == f"http://{RELEASE}.{NAMESPACE}.svc:9464" and parsed.kafka is None
            assert parsed.ingest_token_file == "/var/run/secrets/inferwatch/ingest/token"
        else:
            assert parsed.kafka and parsed.ingest is None
        mounts = {m["mountPath"] for m in sidecars[0]["volumeMounts"]}
        for path in (parsed.admin_token_file, parsed.ingest_token_file, str(parsed.spool)):
            assert path is None or path == "None" or any(path.startswith(m) for m in mounts), path
        ports = {p["name"]: p["containerPort"] for p in sidecars[0]["ports"]}
        assert ports == {"iw-proxy": 8000, "iw-admin": 9400}
        service = _find(docs, "Service", "example-model")[0]
        assert service["spec"]["ports"][0]["targetPort"] == "iw-proxy"  # clients go through the sidecar


def test_sidecar_snippet_file_is_the_default_rendering(rendered: dict[str, Any]) -> None:
    _, docs = rendered["default"]
    snippet = _find(docs, "ConfigMap", "sidecar-snippet")[0]["data"]["sidecar-snippet.yaml"]
    shipped = (CHART / "sidecar-snippet.yaml").read_text()
    body = "".join(line for line in shipped.splitlines(keepends=True) if not line.startswith("# "))
    assert body == snippet, "regenerate deploy/helm/inferwatch/sidecar-snippet.yaml from the chart"
    fragment = yaml.safe_load(shipped)
    assert fragment["spec"]["initContainers"][0]["restartPolicy"] == "Always"
    # a pod built from the fragment alone validates as a Kubernetes pod
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "model", **fragment["metadata"]},
           "spec": {**fragment["spec"], "containers": [{"name": "model", "image": "model:1"}]}}
    for kube in KUBE_VERSIONS:
        kubernetes_validate.validate(pod, kube, strict=True)


def test_every_container_is_hardened(rendered: dict[str, Any]) -> None:
    seen = 0
    for values, (_, docs) in rendered.items():
        for name, spec in _pod_specs(docs):
            pod_ctx = spec.get("securityContext", {})
            assert spec.get("automountServiceAccountToken") is False, name
            for c in spec.get("initContainers", []) + spec["containers"]:
                ctx = {**pod_ctx, **c.get("securityContext", {})}
                where = f"{values}: {name}/{c['name']}"
                assert ctx.get("runAsNonRoot") is True and ctx.get("runAsUser", 0) != 0, where
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], where
                assert "resources" in c, where
                seen += 1
    assert seen >= 5


def test_detector_deployment(rendered: dict[str, Any]) -> None:
    for values, (_, docs) in rendered.items():
        deployment = _find(docs, "Deployment", RELEASE)[0]
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": 9464, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["resources"]["requests"] and container["resources"]["limits"]
        # the daemon's config: the ConfigMap the container mounts, loadable by the daemon's own loader
        text = _find(docs, "ConfigMap", "-config")[0]["data"]["inferwatch.yaml"]
        config = load_config_text(text, source=values)
        assert container["args"] == ["--config", "/etc/inferwatch/config/inferwatch.yaml"]

        def mounted(path: str, spec: dict[str, Any] = spec, where: str = values) -> dict[str, Any]:
            return _volume_of(spec, path, where)

        assert config.server.host == "0.0.0.0" and config.server.port == 9464
        assert config.server.token_file is not None
        assert mounted(config.server.token_file)["secret"]["secretName"] == "inferwatch-token"
        for model in config.models:
            assert model.profile.startswith("/etc/inferwatch/profiles/")
            assert mounted(model.profile)  # the profiles volume
        for channel in config.alerts.channels:
            for key in ("secret_file", "url_file", "routing_key_file"):
                path = getattr(channel, key, None)
                if path is not None:
                    assert "secret" in mounted(path), (values, key)
        if values == "embedded":
            assert config.kafka is None and deployment["spec"]["strategy"]["type"] == "Recreate"
        else:
            assert config.kafka is not None and config.kafka.group == "inferwatch-detect"
            assert deployment["spec"]["replicas"] <= config.kafka.partitions
    _, docs = rendered["all"]
    config = load_config_text(_find(docs, "ConfigMap", "-config")[0]["data"]["inferwatch.yaml"])
    assert [c.__struct_config__.tag for c in config.alerts.channels] == ["webhook", "slack", "pagerduty",
                                                                        "alertmanager"]
    pdb = _find(docs, "PodDisruptionBudget")[0]
    assert pdb["spec"]["selector"]["matchLabels"] == _find(docs, "Deployment", RELEASE)[0]["spec"]["selector"][
        "matchLabels"]


def _volume_of(spec: dict[str, Any], path: str, where: str) -> dict[str, Any]:
    """The volume the detector container mounts at the folder of ``path``."""
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    folder = str(Path(path).parent)
    assert folder in mounts, f"{where}: {path} is not in a mounted volume"
    volume: dict[str, Any] = next(v for v in spec["volumes"] if v["name"] == mounts[folder])
    return volume


def test_network_policy(rendered: dict[str, Any]) -> None:
    _, docs = rendered["default"]
    policy = _find(docs, "NetworkPolicy")[0]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": {"inferwatch.io/sidecar": "true"}}} in rule["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}} in rule["from"]
    assert len(rule["from"]) == 2


def test_monitoring_resources(rendered: dict[str, Any]) -> None:
    _, docs = rendered["all"]
    rules_text = (DEPLOY / "prometheus" / "rules.yml").read_text()
    jobs = set(re.findall(r'job=~?"([^"]+)"', rules_text))
    endpoint = _find(docs, "ServiceMonitor")[0]["spec"]["endpoints"][0]
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "inferwatch-token", "key": "token"}}
    assert endpoint["relabelings"][0]["replacement"] == "inferwatch"
    pod_endpoint = _find(docs, "PodMonitor")[0]["spec"]["podMetricsEndpoints"][0]
    assert pod_endpoint["port"] == "iw-admin"
    assert pod_endpoint["authorization"]["credentials"] == {"name": "inferwatch-sidecar-token", "key": "token"}
    assert pod_endpoint["relabelings"][0]["replacement"] == "inferwatch-sidecar"
    assert {"inferwatch", "inferwatch-sidecar"} <= {j for spec in jobs for j in spec.split("|")}
    # the PrometheusRule holds exactly the groups of deploy/prometheus/rules.yml, through the chart's copy
    assert (CHART / "files" / "rules.yml").read_bytes() == (DEPLOY / "prometheus" / "rules.yml").read_bytes(), \
        "cp deploy/prometheus/rules.yml deploy/helm/inferwatch/files/rules.yml"
    assert _find(docs, "PrometheusRule")[0]["spec"] == yaml.safe_load(rules_text)


def test_dashboards_are_current(rendered: dict[str, Any], tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "monitor.cli", "dashboards", "render", "--out", str(tmp_path)],
                   check=True, capture_output=True, cwd=ROOT, timeout=60)
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    for name in names:
        assert (CHART / "files" / "dashboards" / name).read_bytes() == (tmp_path / name).read_bytes(), \
            f"stale {name}: .venv/bin/inferwatch dashboards render --out DIR and copy the JSON files"
    _, docs = rendered["default"]
    maps = [d for d in docs if d["kind"] == "ConfigMap" and "-dashboard-" in d["metadata"]["name"]]
    assert len(maps) == len(names)
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = m["data"].items()
        assert json.loads(text) == json.loads((tmp_path / name).read_text())


# ----------------------------------------------------------------------------------------------- YAML lint


def _yamllint_config() -> YamlLintConfig:
    return YamlLintConfig(file=str(DEPLOY / ".yamllint"))


def test_yamllint_files() -> None:
    config = _yamllint_config()
    files = [p for p in sorted(DEPLOY.rglob("*.y*ml")) if "templates" not in p.parts]
    assert len(files) >= 15
    problems = []
    for path in files:
        problems += [f"{path.relative_to(ROOT)}:{p}" for p in linter.run(path.read_text(), config, str(path))
                     if p.level == "error"]
    assert not problems, "\n".join(problems)


def test_yamllint_rendered_chart(rendered: dict[str, Any]) -> None:
    """Templates are not YAML until rendered: lint what `helm template` writes."""
    config = _yamllint_config()
    problems = []
    for values, (text, _) in rendered.items():
        problems += [f"helm template ({values}):{p}" for p in linter.run(text, config) if p.level == "error"]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------- compose, topics


def test_compose_matches_the_compose_specification() -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    compose_file = DEPLOY / "compose" / "compose.yaml"
    compose = yaml.safe_load(compose_file.read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator_class(schema).iter_errors(compose)]
    assert not errors, "\n".join(errors)
    invalid = copy.deepcopy(compose)
    invalid["services"]["detector"]["read_onyl"] = True  # misspelt: the specification refuses unknown keys
    assert not validator_class(schema).is_valid(invalid)

    services = compose["services"]
    assert {"kafka", "demo-model", "sidecar", "detector", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    base = compose_file.parent
    for name, service in services.items():  # every file it names exists
        build = service.get("build")
        if build:
            assert (base / build["context"] / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (base / source).exists(), (name, source)
    for config in compose["configs"].values():
        assert (base / config["file"]).is_file(), config
    # the detector's config loads; the sidecar's arguments parse; Prometheus scrapes both with their tokens
    detector = load_config_text((base / "detector" / "inferwatch.yaml").read_text())
    assert detector.kafka is not None and detector.kafka.bootstrap == "kafka:9092"
    assert detector.server.token_file == "/run/secrets/inferwatch_token"
    sidecar = _parser().parse_args(["sidecar", *services["sidecar"]["command"]])
    assert sidecar.kafka == "kafka:9092" and sidecar.admin_token_file == "/run/secrets/sidecar_token"
    assert services["sidecar"]["network_mode"] == "service:demo-model"
    prometheus = yaml.safe_load((base / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prometheus["scrape_configs"]}
    assert jobs["inferwatch"]["authorization"]["credentials_file"] == "/run/secrets/inferwatch_token"
    assert jobs["inferwatch-sidecar"]["authorization"]["credentials_file"] == "/run/secrets/sidecar_token"
    provider = yaml.safe_load((base / "grafana" / "provisioning" / "dashboards" / "inferwatch.yaml").read_text())
    mounted = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"] if v.startswith(".")}
    assert (base / mounted[provider["providers"][0]["options"]["path"]] / "fleet.json").is_file()
    for service in ("sidecar", "detector", "demo-model"):
        assert services[service]["read_only"] is True and services[service]["user"] == "10001:10001"


def test_kafka_topics() -> None:
    schema = json.loads((DATA / "kafkatopic-v1beta2.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    topics = list(yaml.safe_load_all((DEPLOY / "kafka" / "topics.yaml").read_text()))
    for topic in topics:
        validator.validate(topic)
    by_name = {t["metadata"]["name"]: t["spec"] for t in topics}
    assert set(by_name) == TOPICS
    assert by_name["inferwatch.alerts"]["config"]["cleanup.policy"] == "compact"
    for name, spec in by_name.items():
        assert spec["partitions"] >= 1 and spec["replicas"] >= 1, name
        if name != "inferwatch.alerts":
            assert spec["config"]["retention.ms"] > 0 and "cleanup.policy" not in spec["config"], name
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert by_name["inferwatch.events"]["partitions"] == defaults["kafka"]["partitions"]
    assert not validator.is_valid({**topics[0], "spec": {**topics[0]["spec"], "partitions": "6"}})


# ------------------------------------------------------------------------------------------------- images


DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def test_dockerfiles_lint(hadolint: str) -> None:
    assert [p.name for p in DOCKERFILES] == ["demo-model.Dockerfile", "detector.Dockerfile", "sidecar.Dockerfile"]
    result = subprocess.run([hadolint, "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.stem)
def test_dockerfile_runs_hardened(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    final = text[text.rindex("\nFROM "):]  # the image that ships (the last stage)
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "a numeric non-root USER"
    assert re.search(r"^HEALTHCHECK .*urllib\.request.*/healthz", final, re.M | re.S)
    assert re.search(r"^EXPOSE \d+", final, re.M)
    assert "org.opencontainers.image.title" in final
    assert re.search(r"^VOLUME ", final, re.M)  # writable paths are volumes: the root filesystem can be read-only
    assert "curl" not in final
    for line in re.findall(r"pip[^\n]* install[^\n]*", text):
        assert "--no-cache-dir" in line, line
    assert (DOCKER / f"{dockerfile.name}.dockerignore").is_file()


def _requirements(name: str) -> dict[str, str]:
    pins = {}
    for line in (DOCKER / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line)
            assert match, f"{name}: not pinned: {line}"
            pins[_normal(match.group(1))] = match.group(2)
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Imported when installed, never needed: msgspec tries typing_extensions, kafka-python tries xxhash (lz4 for
# 0.8/0.9 brokers). The test below checks the sidecar still imports with each of them blocked.
OPTIONAL_IMPORTS = {"typing_extensions": "typing-extensions", "xxhash": "xxhash"}
SIDECAR_IMPORTS = "import monitor.cli, monitor.config, collectors.sidecar, collectors.connecting, collectors.spool"


def test_sidecar_requirements_cover_its_imports() -> None:
    """What `inferwatch sidecar` imports (without starting anything) is pinned in sidecar-requirements.txt;
    no scipy, no torch."""
    probe = (
        "import json, sys\n"
        f"{SIDECAR_IMPORTS}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60,
                            check=True)
    top = set(json.loads(result.stdout.splitlines()[-1]))
    own = {"monitor", "collectors", "detectors", "dashboards"}
    third_party = {m for m in top - set(sys.stdlib_module_names) - own
                   if not m.startswith("_") and m != "cython_runtime"}
    dists = importlib.metadata.packages_distributions()
    unmapped = sorted(m for m in third_party if m not in dists)
    assert not unmapped, f"imported modules without a distribution: {unmapped}"
    needed = {_normal(dists[m][0]) for m in third_party if m not in OPTIONAL_IMPORTS}
    pins = _requirements("sidecar-requirements.txt")
    assert needed <= set(pins), f"missing from sidecar-requirements.txt: {sorted(needed - set(pins))}"
    assert not {"scipy", "torch"} & (set(pins) | {_normal(d) for m in third_party for d in dists[m]})
    assert {"numpy", "msgspec", "kafka-python", "crc32c", "prometheus-client", "pyyaml", "standardwebhooks",
            "uvloop"} <= set(pins) and "httptools" not in pins
    # the optional ones really are optional
    blocked = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in OPTIONAL_IMPORTS) + SIDECAR_IMPORTS
    subprocess.run([sys.executable, "-c", blocked], capture_output=True, cwd=ROOT, timeout=60, check=True)


def test_image_requirements_match_the_project() -> None:
    """The pins are the release series tested here (major.minor: a patch release resolved on a fresh machine
    does not fail this), and the detector's list is the core dependencies."""
    sidecar, detector = _requirements("sidecar-requirements.txt"), _requirements("detector-requirements.txt")
    for name, version in {**sidecar, **detector}.items():
        installed = importlib.metadata.version(name)
        assert installed.split(".")[:2] == version.split(".")[:2], f"{name}: pinned {version}, tested {installed}"
    assert detector == {**sidecar, "scipy": detector["scipy"]}
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {_normal(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in core}
    assert names <= set(detector), sorted(names - set(detector))
    assert names - {"scipy"} <= set(sidecar), sorted(names - {"scipy"} - set(sidecar))


def test_docs_values_example_renders(helm: str, tmp_path: Path) -> None:
    """The values file docs/deploy.md shows is valid and renders to objects Kubernetes accepts."""
    docs = (ROOT / "docs" / "deploy.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", docs, re.S) if b.startswith("# my-values.yaml")]
    values = tmp_path / "my-values.yaml"
    values.write_text(block)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    _values_validator().validate(_merge(defaults, yaml.safe_load(block)))
    result = _template(helm, values)
    assert result.returncode == 0, result.stderr
    for doc in yaml.safe_load_all(result.stdout):
        if doc and doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
        elif doc:
            _crd_validator(doc["kind"]).validate(doc)
