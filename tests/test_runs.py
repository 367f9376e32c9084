"""Training runs: the URI parser, folder runs, W&B offline runs made by wandb itself, and a real MLflow tracking
server round trip (log a run with a data artifact, read it back, download the artifact, log a profile back)."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest

from monitor.errors import InferwatchError
from monitor.runs import RunError, TrainingRun, download_artifact, log_artifact, parse_run_uri, resolve_run
from monitor.runs.wandb_adapter import read_log
from tests.mlflow_server import mlflow_server  # noqa: F401  (the module-scoped server fixture)
from tests.support import free_port, wait_until

# ---- the parser -------------------------------------------------------------------------------------------


def test_every_scheme_parses_into_its_parts(tmp_path: Path) -> None:
    ref = parse_run_uri("mlflow://mlflow.internal:5000/0123abcd")
    assert (ref.scheme, ref.tracking_uri, ref.run_id) == ("mlflow", "http://mlflow.internal:5000", "0123abcd")
    ref = parse_run_uri("mlflow+https://mlflow.example/prefix/0123abcd")
    assert (ref.scheme, ref.tracking_uri, ref.run_id) == ("mlflow", "https://mlflow.example/prefix", "0123abcd")
    ref = parse_run_uri("runs:/0123abcd", tracking_uri="http://127.0.0.1:5000/")
    assert (ref.scheme, ref.tracking_uri, ref.run_id) == ("mlflow", "http://127.0.0.1:5000", "0123abcd")
    store = tmp_path / "demo runs" / "mlflow.db"  # a space, percent-encoded in the URI
    ref = parse_run_uri(f"mlflow+sqlite://{store.as_uri().removeprefix('file://')}/0123abcd")
    assert (ref.scheme, ref.tracking_uri, ref.run_id, ref.path) == ("mlflow", f"sqlite:///{store}", "0123abcd", store)
    ref = parse_run_uri("runs:/0123abcd", tracking_uri=f"sqlite:///{store}")
    assert (ref.scheme, ref.tracking_uri, ref.run_id, ref.path) == ("mlflow", f"sqlite:///{store}", "0123abcd", store)
    ref = parse_run_uri("wandb://acme/digits/1x2y3z4w")
    assert (ref.scheme, ref.entity, ref.project, ref.run_id) == ("wandb", "acme", "digits", "1x2y3z4w")
    ref = parse_run_uri("https://mlflow.example/#/experiments/1/runs/0123abcd")
    assert (ref.scheme, ref.url) == ("url", "https://mlflow.example/#/experiments/1/runs/0123abcd")
    offline = tmp_path / "wandb" / "offline-run-20250101_120000-1x2y3z4w"
    ref = parse_run_uri(str(offline))
    assert (ref.scheme, ref.run_id, ref.path) == ("wandb-offline", "1x2y3z4w", offline)
    assert parse_run_uri(offline.as_uri()).scheme == "wandb-offline"
    assert parse_run_uri(str(tmp_path / "wandb" / "run-20250101_120000-abc")).scheme == "wandb-offline"
    ref = parse_run_uri((tmp_path / "runs" / "42").as_uri())
    assert (ref.scheme, ref.path) == ("file", tmp_path / "runs" / "42")
    assert parse_run_uri(str(tmp_path / "runs" / "42")).scheme == "file"


@pytest.mark.parametrize(("uri", "tracking", "message"), [
    ("", None, "run URI '': the run URI is empty; e.g. mlflow://"),
    ("   ", None, "the run URI is empty"),
    ("s3://bucket/run", None, "run URI 's3://bucket/run': unknown scheme 's3'; e.g. mlflow://HOST:PORT/RUN_ID"),
    ("mlflow:///0123abcd", None, "run URI 'mlflow:///0123abcd': no tracking host; e.g. mlflow://"),
    ("mlflow://127.0.0.1:5000/", None, "the MLflow run id '' is missing"),
    ("mlflow://127.0.0.1:5000/a b", None, "the MLflow run id 'a b' is missing or has characters"),
    ("runs:/0123abcd", None, "run URI 'runs:/0123abcd': runs:/ needs the MLflow tracking URI"),
    ("runs:/0123abcd/model/data", "http://h:5000", "a run URI names a run, not an artifact inside it"),
    ("runs:/0123abcd", "sqlite:///mlflow.db", "the tracking URI 'sqlite:///mlflow.db' is neither an http(s) MLflow "
                                              "tracking server nor a sqlite store named by its absolute path"),
    ("mlflow+sqlite://runs/mlflow.db/0123abcd", None, "a local MLflow store is named by its absolute path, after "
                                                      "three slashes, not by 'runs'; e.g. mlflow+sqlite:///"),
    ("mlflow+sqlite:///0123abcd", None, "no database file before the run id; e.g. mlflow+sqlite:///data/"),
    ("mlflow+sqlite:///data/mlflow.db/", None, "the MLflow run id '' is missing or has characters a run id cannot "
                                              "have; e.g. mlflow+sqlite:///data/runs/mlflow.db/"),
    ("wandb://acme/digits", None, "run URI 'wandb://acme/digits': a W&B run is ENTITY/PROJECT/RUN_ID, three "
                                  "non-empty parts, not 'acme/digits'"),
    ("wandb://acme//x", None, "three non-empty parts, not 'acme//x'; e.g. wandb://acme/digits/1x2y3z4w"),
    ("wandb://acme/digits/x/y", None, "three non-empty parts, not 'acme/digits/x/y'"),
    ("https:///nohost", None, "the URL has no host"),
    ("file://otherhost/runs/42", None, "a file URI names a folder on this machine, not on 'otherhost'"),
])
def test_bad_uris_say_what_is_wrong_and_show_a_good_one(uri: str, tracking: str | None, message: str) -> None:
    with pytest.raises(RunError) as caught:
        parse_run_uri(uri, tracking)
    assert message in str(caught.value)
    assert "e.g." in str(caught.value)
    assert isinstance(caught.value, InferwatchError)


# ---- folder runs ------------------------------------------------------------------------------------------


def _folder_run(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"lr": 0.01, "model": {"depth": 18, "name": "resnet"}}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 0.93, "loss": 0.21, "notes": "fine"}))
    np.savez(folder / "data" / "train.npz", x=np.arange(12.0).reshape(4, 3))
    return folder


def test_a_folder_run_reads_config_metrics_and_files(tmp_path: Path) -> None:
    folder = _folder_run(tmp_path / "runs" / "42")
    run = resolve_run(folder.as_uri())
    assert run.source == "file" and run.id == "42" and run.url == folder.as_uri()
    assert run.params == {"lr": "0.01", "model.depth": "18", "model.name": "resnet"}
    assert run.metrics == {"accuracy": 0.93, "loss": 0.21}
    assert run.artifacts == ("config.json", "data/train.npz", "metrics.json")
    assert run.created is not None
    assert TrainingRun.from_dict(json.loads(json.dumps(run.to_dict()))) == run

    got = download_artifact(run, "data/train.npz", tmp_path / "dl")
    assert got == tmp_path / "dl" / "train.npz"
    assert got.read_bytes() == (folder / "data" / "train.npz").read_bytes()
    assert download_artifact(run, "data", tmp_path / "dl2") == tmp_path / "dl2" / "data"
    assert (tmp_path / "dl2" / "data" / "train.npz").is_file()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["train.npz"]  # no staging left behind

    profile = tmp_path / "digits.profile.npz"
    profile.write_bytes(b"profile")
    where = log_artifact(run, profile)
    assert where == (folder / "inferwatch" / "digits.profile.npz").as_uri()
    assert "inferwatch/digits.profile.npz" in resolve_run(str(folder)).artifacts
    assert log_artifact(run, profile, "reference") == (folder / "inferwatch/reference/digits.profile.npz").as_uri()


def test_a_folder_run_errors_name_the_uri(tmp_path: Path) -> None:
    folder = _folder_run(tmp_path / "runs" / "42")
    run = resolve_run(str(folder))
    with pytest.raises(RunError, match=r"run 'file://.*/runs/42' has no artifact 'val.npz'; it has: "
                                        r"config.json, data/train.npz, metrics.json"):
        download_artifact(run, "val.npz", tmp_path / "dl")
    assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())
    with pytest.raises(RunError, match="must be a path inside the run"):
        download_artifact(run, "../42/config.json", tmp_path / "dl")
    with pytest.raises(RunError, match=r"run '.*/runs/missing': no folder at"):
        resolve_run(str(tmp_path / "runs" / "missing"))
    (folder / "metrics.json").write_text("[1, 2]")
    with pytest.raises(RunError, match=r"metrics\.json holds a JSON list, not an object"):
        resolve_run(str(folder))
    with pytest.raises(RunError, match="nothing to log at"):
        log_artifact(run, tmp_path / "absent.npz")
    assert not (folder / "inferwatch").exists()


def test_a_url_run_is_a_link_only(tmp_path: Path) -> None:
    run = resolve_run("https://mlflow.example/#/experiments/1/runs/0123abcd")
    assert (run.source, run.url, run.params, run.artifacts) == ("url", run.uri, {}, ())
    (tmp_path / "p.npz").write_bytes(b"x")
    with pytest.raises(RunError, match="cannot log to a URL run"):
        log_artifact(run, tmp_path / "p.npz")
    with pytest.raises(RunError, match="a URL run has no artifacts"):
        download_artifact(run, "train.npz", tmp_path)


def test_an_online_wandb_run_without_credentials_is_its_url(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))  # no `wandb login` entry
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = resolve_run("wandb://acme/digits/1x2y3z4w")
    assert run.url == "https://wandb.ai/acme/digits/runs/1x2y3z4w"
    assert "WANDB_API_KEY" in run.note and run.params == {} and run.artifacts == ()
    with pytest.raises(RunError, match=r"run 'wandb://acme/digits/1x2y3z4w': .*needs .*WANDB_API_KEY"):
        download_artifact(run, "model.pt", tmp_path)


# ---- W&B offline runs, made by wandb ------------------------------------------------------------------------


@pytest.fixture
def offline_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A finished offline run made by wandb itself, with a config, logged history and a summary value."""
    wandb = pytest.importorskip("wandb")
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                       "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = wandb.init(mode="offline", dir=tmp_path, project="digits", name="cnn-baseline",
                     config={"lr": 0.01, "layers": [64, 32], "optimizer": {"name": "adam"}})
    for step in range(3):
        wandb.log({"loss": 1.0 / (step + 1)})
    run.summary["accuracy"] = 0.93
    (Path(run.dir) / "train.csv").write_text("f0,f1\n0.1,0.2\n")
    run_id = run.id
    wandb.finish()
    (folder,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    # wandb-core writes the log from its own process: finish() can return before the last records reach the
    # file (seen on a busy machine: no run record yet). A finished run's log ends with its exit record.
    wait_until(lambda: _has_exit_record(folder), f"wandb to write the exit record of {folder.name}")
    return folder


def _has_exit_record(folder: Path) -> bool:
    from wandb.proto import wandb_internal_pb2

    for raw in read_log(str(folder), next(folder.glob("run-*.wandb"))):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "exit":
            return True
    return False


@pytest.mark.slow
def test_a_wandb_offline_run_reads_config_and_summary(offline_run: Path, tmp_path: Path) -> None:
    run = resolve_run(str(offline_run))
    assert run.source == "wandb-offline" and run.name == "cnn-baseline"
    assert offline_run.name.endswith(run.id) and run.url == offline_run.as_uri()
    assert run.params == {"lr": "0.01", "layers": "[64,32]", "optimizer.name": "adam"}
    assert run.metrics == {"loss": pytest.approx(1 / 3), "accuracy": 0.93}
    assert run.created is not None and abs(run.created - time.time()) < 24 * 3600
    assert "train.csv" in run.artifacts
    assert f"/digits/runs/{run.id}" in run.note
    assert resolve_run(str(offline_run.parent / "latest-run")).id == run.id

    got = download_artifact(run, "train.csv", tmp_path / "dl")
    assert got.read_text() == "f0,f1\n0.1,0.2\n"
    profile = tmp_path / "digits.profile.npz"
    profile.write_bytes(b"profile")
    assert log_artifact(run, profile, "inferwatch") == (offline_run / "files/inferwatch/digits.profile.npz").as_uri()
    assert "inferwatch/digits.profile.npz" in resolve_run(run.uri).artifacts
    with pytest.raises(RunError, match=r"has no artifact 'model.pt'; it has: .*train.csv"):
        download_artifact(run, "model.pt", tmp_path / "dl")


def test_a_corrupt_wandb_log_is_an_error_naming_the_run(offline_run: Path) -> None:
    (log,) = offline_run.glob("run-*.wandb")
    data = bytearray(log.read_bytes())
    data[40] ^= 0xFF  # inside the first record's body
    log.write_bytes(bytes(data))
    with pytest.raises(RunError, match=rf"run '{offline_run}': run-.*\.wandb is corrupt at byte 7 \(CRC mismatch\)"):
        resolve_run(str(offline_run))


# ---- a real MLflow tracking server --------------------------------------------------------------------------


@pytest.fixture
def mlflow_run(mlflow_server: str, tmp_path: Path) -> tuple[str, Path]:  # noqa: F811
    """A finished run on the server with params, metrics and a data artifact ``data/train.npz``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment(f"digits-{tmp_path.name}")
    run = client.create_run(experiment, run_name="cnn-baseline")
    client.log_param(run.info.run_id, "lr", "0.01")
    client.log_param(run.info.run_id, "epochs", "12")
    client.log_metric(run.info.run_id, "accuracy", 0.91, step=0)
    client.log_metric(run.info.run_id, "accuracy", 0.93, step=1)
    data = tmp_path / "train.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(100, 4)))
    client.log_artifact(run.info.run_id, str(data), "data")
    client.set_terminated(run.info.run_id)
    return run.info.run_id, data


@pytest.mark.slow
def test_mlflow_round_trip(mlflow_server: str, mlflow_run: tuple[str, Path], tmp_path: Path) -> None:  # noqa: F811
    run_id, data = mlflow_run
    port = mlflow_server.rsplit(":", 1)[1]
    run = resolve_run(f"mlflow://127.0.0.1:{port}/{run_id}")
    assert run.source == "mlflow" and run.id == run_id and run.name == "cnn-baseline"
    assert run.params == {"lr": "0.01", "epochs": "12"}
    assert run.metrics == {"accuracy": 0.93}
    assert run.artifacts == ("data/train.npz",)
    assert run.url.startswith(f"{mlflow_server}/#/experiments/") and run.url.endswith(f"/runs/{run_id}")
    assert run.created is not None and abs(run.created - time.time()) < 24 * 3600
    assert resolve_run(f"runs:/{run_id}", tracking_uri=mlflow_server) == run

    got = download_artifact(run, "data/train.npz", tmp_path / "dl")
    assert got == tmp_path / "dl" / "train.npz" and got.read_bytes() == data.read_bytes()
    assert download_artifact(run, "data", tmp_path / "dl2") == tmp_path / "dl2" / "data"
    assert (tmp_path / "dl2" / "data" / "train.npz").read_bytes() == data.read_bytes()

    profile = tmp_path / "digits.profile.npz"
    profile.write_bytes(b"a profile")
    assert log_artifact(run, profile, "inferwatch") == f"runs:/{run_id}/inferwatch/digits.profile.npz"
    again = resolve_run(run.uri)
    assert again.artifacts == ("data/train.npz", "inferwatch/digits.profile.npz")
    back = download_artifact(again, "inferwatch/digits.profile.npz", tmp_path / "back")
    assert back.read_bytes() == b"a profile"


@pytest.mark.slow
def test_mlflow_errors_name_the_uri(mlflow_server: str, mlflow_run: tuple[str, Path],  # noqa: F811
                                    tmp_path: Path) -> None:
    run_id, _ = mlflow_run
    port = mlflow_server.rsplit(":", 1)[1]
    missing = f"mlflow://127.0.0.1:{port}/{'f' * 32}"
    with pytest.raises(RunError, match=rf"run '{missing}': the tracking server {mlflow_server} has no run 'f+'"):
        resolve_run(missing)

    run = resolve_run(f"mlflow://127.0.0.1:{port}/{run_id}")
    with pytest.raises(RunError, match=rf"run '{run.uri}' has no artifact 'data/val.npz'; it has: data/train.npz"):
        download_artifact(run, "data/val.npz", tmp_path / "dl")
    assert not (tmp_path / "dl").exists() or not any((tmp_path / "dl").iterdir())  # nothing half-written

    gone = TrainingRun.from_dict({**run.to_dict(), "uri": missing})
    (tmp_path / "p.npz").write_bytes(b"x")
    with pytest.raises(RunError, match=rf"run '{missing}': the tracking server .* has no run"):
        log_artifact(gone, tmp_path / "p.npz")


def test_an_unreachable_mlflow_server_is_an_error_naming_the_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    uri = f"mlflow://127.0.0.1:{free_port()}/0123456789abcdef"  # a closed port
    before = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    with pytest.raises(RunError, match=rf"run '{uri}': cannot read it from the MLflow tracking server "
                                       r"http://127.0.0.1:\d+: .*(Connection refused|Max retries)"):
        resolve_run(uri, timeout_s=5)
    assert os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES") == before  # the bound is only for the call


# ---- a local MLflow store (sqlite, no server) ---------------------------------------------------------------


@pytest.fixture
def local_run(tmp_path: Path) -> tuple[Path, str, Path]:
    """A finished run in a local MLflow store (``mlflow.db`` and ``artifacts/``, as the demo keeps them) with
    params, metrics and a data artifact ``data/train.npz``: the database, the run id and the data file."""
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("digits", artifact_location=(db.parent / "artifacts").as_uri())
    run = client.create_run(experiment, run_name="cnn-baseline")
    client.log_param(run.info.run_id, "lr", "0.01")
    client.log_metric(run.info.run_id, "accuracy", 0.91, step=0)
    client.log_metric(run.info.run_id, "accuracy", 0.93, step=1)
    data = tmp_path / "train.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(100, 4)))
    client.log_artifact(run.info.run_id, str(data), "data")
    client.set_terminated(run.info.run_id)
    return db, run.info.run_id, data


@pytest.mark.slow
def test_a_local_mlflow_store_round_trip(local_run: tuple[Path, str, Path], tmp_path: Path) -> None:
    db, run_id, data = local_run
    uri = f"mlflow+sqlite://{db}/{run_id}"
    run = resolve_run(uri)
    assert (run.uri, run.source, run.id, run.name) == (uri, "mlflow", run_id, "cnn-baseline")
    assert (run.params, run.metrics, run.artifacts) == ({"lr": "0.01"}, {"accuracy": 0.93}, ("data/train.npz",))
    folder = db.parent / "artifacts" / run_id / "artifacts"  # MLflow's layout under the experiment's location
    assert run.url == folder.as_uri()  # no web page: the artifact folder
    assert f"mlflow ui --backend-store-uri sqlite:///{db}" in run.note
    assert resolve_run(f"runs:/{run_id}", tracking_uri=f"sqlite:///{db}") == run  # found again by its uri

    got = download_artifact(run, "data/train.npz", tmp_path / "dl")
    assert got == tmp_path / "dl" / "train.npz" and got.read_bytes() == data.read_bytes()
    profile = tmp_path / "digits.profile.npz"
    profile.write_bytes(b"a profile")
    assert log_artifact(run, profile, "inferwatch") == f"runs:/{run_id}/inferwatch/digits.profile.npz"
    assert (folder / "inferwatch" / "digits.profile.npz").read_bytes() == b"a profile"
    assert resolve_run(uri).artifacts == ("data/train.npz", "inferwatch/digits.profile.npz")

    missing = f"mlflow+sqlite://{db}/{'f' * 32}"
    with pytest.raises(RunError, match=rf"run '{re.escape(missing)}': the MLflow store sqlite:///{db} has no run 'f+'"):
        resolve_run(missing)
    (tmp_path / "other.db").write_bytes(b"not a database, but a file of the right name" * 100)
    with pytest.raises(RunError, match=rf"run '.*/other.db/{run_id}': cannot open the MLflow store .*other.db: "):
        resolve_run(f"mlflow+sqlite://{tmp_path}/other.db/{run_id}")


def test_a_local_store_that_is_not_there_is_an_error_naming_the_uri(tmp_path: Path) -> None:
    uri = f"mlflow+sqlite://{tmp_path}/mlflow.db/0123abcd"
    with pytest.raises(RunError, match=rf"run '{re.escape(uri)}': there is no MLflow store at {tmp_path}/mlflow.db "
                                       r"\(no such file\); name the store's database file, e.g. mlflow\+sqlite:///"):
        resolve_run(uri)
    assert not (tmp_path / "mlflow.db").exists()  # MLflow would have made an empty store there
