"""The demo's training runs: each trainer records its run in a local MLflow store, and a W&B offline run beside it
when ``wandb`` is installed; the demo's profile is then built from the run as ``inferwatch baseline --from-run``
builds it, and names the run, so that the demo's alerts link it and its alerting windows are logged to it.

The store is one folder (``--runs-dir``; ``.inferwatch/demo-runs`` by default, ``OUT/runs`` with ``--out``):
``mlflow.db`` (MLflow's sqlite store; MLflow 3 refuses a plain-folder store), ``artifacts/`` (each run's files)
and ``wandb/`` (the offline W&B runs). A run is named ``mlflow+sqlite:///ABS/PATH/mlflow.db/RUN_ID``, which
:func:`monitor.runs.resolve_run` reads with no other configuration; ``mlflow ui --backend-store-uri
sqlite:////ABS/PATH/mlflow.db`` browses the store. Nothing is sent anywhere: MLflow's usage telemetry is turned
off before MLflow is imported (unless ``MLFLOW_DISABLE_TELEMETRY`` says otherwise), W&B runs offline and silent,
and MLflow draws no download progress bars among the demo's progress lines.
MLflow and wandb are imported only here, only when a run is recorded.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from monitor.errors import InferwatchError
from monitor.profiles import Profile, save_profile

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = ["DEFAULT_DIR", "EXPERIMENT", "DemoRun", "RunStore", "TrainedRun", "describe", "open_store"]

#: Where the demo keeps its runs without ``--runs-dir`` or ``--out``, under the current directory.
DEFAULT_DIR = Path(".inferwatch") / "demo-runs"
#: The MLflow experiment and W&B project of the demo's runs.
EXPERIMENT = "inferwatch-demo"
#: The MLflow run tag that holds the W&B offline run's directory.
WANDB_TAG = "inferwatch.wandb_run"


@dataclass(frozen=True)
class TrainedRun:
    """What a demo trainer hands over to be recorded: its ``params`` (hyper-parameters, sizes), ``metrics``
    (final values), ``history`` (per-step values, e.g. the training loss) and ``data``: the ``.npz`` files the
    profile is built from, by file name, as arrays by name (:mod:`monitor.datafiles`)."""

    name: str
    params: Mapping[str, str | int | float | bool]
    metrics: Mapping[str, float]
    data: Mapping[str, Mapping[str, np.ndarray]]
    history: Mapping[str, Sequence[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoRun:
    """A recorded run, as the demo's report gives it: ``uri`` names it (``mlflow+sqlite:///…/RUN_ID``), ``url``
    is its artifact folder (``file://``), ``browse`` the command that opens the store in MLflow's UI, and
    ``wandb_dir`` the W&B offline run's directory (None without wandb)."""

    uri: str
    url: str
    browse: str
    wandb_dir: str | None


class RunStore:
    """The local MLflow store in ``folder`` (made on first use): ``mlflow.db``, ``artifacts/``, ``wandb/``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._client: MlflowClient | None = None

    @property
    def tracking_uri(self) -> str:
        """SQLAlchemy's form: ``sqlite:///`` and the absolute path."""
        return f"sqlite:///{(self.folder / 'mlflow.db').as_posix()}"

    @property
    def browse(self) -> str:
        """The shell command that opens the store in MLflow's web UI."""
        return f"mlflow ui --backend-store-uri {shlex.quote(self.tracking_uri)}"

    def client(self) -> MlflowClient:
        """MLflow's client on this store, made (and the store with it, in a few seconds) on first use."""
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read once, when mlflow is first imported
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars among the progress
            from mlflow.tracking import MlflowClient

            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._client = MlflowClient(tracking_uri=self.tracking_uri)
            except Exception as exc:  # OSError, MlflowException, SQLAlchemy's
                raise InferwatchError(f"--runs-dir {self.folder}: cannot open an MLflow store there: {exc}; "
                                      "--no-runs skips recording the demo's runs") from exc
        return self._client

    def record(self, trained: TrainedRun) -> DemoRun:
        """Record ``trained`` as a finished MLflow run, and as a W&B offline run when wandb is installed."""
        client = self.client()
        from mlflow.entities import Metric, Param

        from monitor.runs import resolve_run

        wandb_dir = self._wandb(trained)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None else
                         client.create_experiment(EXPERIMENT, artifact_location=(self.folder / "artifacts").as_uri()))
        tags = {} if wandb_dir is None else {WANDB_TAG: str(wandb_dir)}
        run_id = client.create_run(experiment_id, run_name=trained.name, tags=tags).info.run_id
        try:
            metrics = [Metric(key, float(value), 0, 0) for key, value in trained.metrics.items()]
            metrics += [Metric(key, float(value), 0, step) for key, values in trained.history.items()
                        for step, value in enumerate(values)]
            params = [Param(key, str(value)) for key, value in trained.params.items()]
            for lo in range(0, max(len(metrics), 1), 1000):  # MLflow takes at most 1000 metrics a batch
                client.log_batch(run_id, metrics=metrics[lo:lo + 1000], params=params if lo == 0 else [])
            with tempfile.TemporaryDirectory(prefix="inferwatch-demo-run-") as tmp:
                for path in _write_data(Path(tmp), trained.data):
                    client.log_artifact(run_id, str(path))
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id)
        recorded = resolve_run(f"runs:/{run_id}", tracking_uri=self.tracking_uri)  # named as it is found again
        return DemoRun(uri=recorded.uri, url=recorded.url, browse=self.browse,
                       wandb_dir=None if wandb_dir is None else str(wandb_dir))

    def baseline(self, run: DemoRun, artifact: str, out: Path, model: str, version: str,
                 finish: Callable[[Profile], Profile] = lambda profile: profile) -> Profile:
        """The profile of ``run``'s ``artifact``, built and logged back to the run as ``inferwatch baseline
        --from-run`` does (:func:`~monitor.baselines.from_run.baseline_from_run`), then passed to ``finish`` (the
        CNN adds its calibration from the validation split) and named by the run's URI. It is written to ``out``
        and the run holds it (replacing the one ``baseline_from_run`` logged under the same name)."""
        from monitor.baselines.from_run import baseline_from_run
        from monitor.runs import log_artifact, resolve_run

        built = baseline_from_run(run.uri, out, model, version, artifact=artifact)
        profile = replace(finish(built.profile), training_run=run.uri)
        save_profile(out, profile)
        log_artifact(resolve_run(run.uri), out)
        return profile

    def _wandb(self, trained: TrainedRun) -> Path | None:
        """The same run as a W&B offline run under ``wandb/``: config, history, summary and data files. Offline and
        silent whatever the environment says (wandb's explicit settings win over its variables), so there is no
        network and no login prompt."""
        try:
            import wandb
        except ImportError:
            return None
        settings = wandb.Settings(mode="offline", silent=True, console="off", disable_git=True, save_code=False,
                                  x_disable_stats=True, x_disable_meta=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            run = wandb.init(dir=self.folder, project=EXPERIMENT, name=trained.name, config=dict(trained.params),
                             settings=settings, reinit="create_new")
            try:
                for key, values in trained.history.items():
                    for step, value in enumerate(values):
                        run.log({key: float(value)}, step=step)
                run.summary.update({key: float(value) for key, value in trained.metrics.items()})
                _write_data(Path(run.dir), trained.data)  # the run's files/
            finally:
                run.finish()
        except Exception as exc:  # wandb's own errors (its service did not start, a full disk)
            raise InferwatchError(f"recording the W&B offline run in {self.folder / 'wandb'} failed: {exc}; "
                                  "--no-runs skips recording the demo's runs") from exc
        return Path(run.settings.sync_dir)


def _write_data(folder: Path, data: Mapping[str, Mapping[str, np.ndarray]]) -> list[Path]:
    paths = []
    for name, arrays in data.items():
        path = folder / name
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy types **kwds with allow_pickle: bool
        paths.append(path)
    return paths


def open_store(folder: Path, progress: Callable[[str], None]) -> RunStore | None:
    """The demo's run store in ``folder``, or None, said in ``progress``, when MLflow's local store cannot be used
    here (the demo then names its runs ``demo://…``): it needs the full ``mlflow`` package (mlflow-skinny lacks
    SQLAlchemy and Alembic)."""
    missing = [name for name in ("mlflow", "sqlalchemy", "alembic") if importlib.util.find_spec(name) is None]
    if missing:  # found without importing: importing mlflow takes seconds, and the store does it when it records
        progress(f"the training runs are not recorded: MLflow's local store needs {', '.join(missing)} "
                 "(pip install mlflow)")
        return None
    store = RunStore(folder)
    progress(f"training runs are recorded in {store.folder} (browse them with {store.browse})")
    return store


def describe(run: DemoRun) -> str:
    """One progress line about a recorded run."""
    wandb = f"; W&B offline run {run.wandb_dir}" if run.wandb_dir else "; no W&B run (wandb is not installed)"
    return f"training run {run.uri} ({run.url}){wandb}"
