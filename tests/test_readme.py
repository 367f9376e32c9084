"""Everything the README shows must work: every ```yaml block is a config the daemon accepts, and every
`inferwatch ...` command in a shell block (```sh, ```bash, ```shell, ```console) parses, and runs when it can run
offline (`schema`, `baseline`, `drift`, on small generated files named as in the README).

Probe item 11 (issue 7): the README's own example config was rejected (`unknown field 'consecutive'`). Blocks
of program output (untagged fences, like the demo's) are not commands. Written to survive README edits: it
finds blocks and commands by their fences, not by position.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from monitor.cli import _parser, main
from monitor.config import load_alerts_config, load_config_text, load_sidecar_config
from monitor.events import InferenceEvent, encode_event

README = Path(__file__).parents[1] / "README.md"
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
SHELL = {"sh", "bash", "shell", "console"}
#: Subcommands that run offline on generated files; the others (the daemon, the demo, the sidecar) need a network
#: or minutes, so only their command lines are parsed and their --help is run.
OFFLINE = {"schema", "baseline", "drift"}


def _blocks(*languages: str) -> list[str]:
    return [m["body"] for m in _FENCE.finditer(README.read_text(encoding="utf-8")) if m["lang"] in languages]


def _commands() -> list[str]:
    """Each `inferwatch ...` line of a shell block, without prompt and comment, continuations joined."""
    out = []
    for block in _blocks(*SHELL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("inferwatch "):
                out.append(line.split(" #", 1)[0].strip())
    return out


def _variants(command: str) -> list[list[str]]:
    """The command as written with its ``[optional]`` parts left out, and with all of them in."""
    bare = re.sub(r"\s*\[[^\]]*\]", "", command)
    full = re.sub(r"\[([^\]]*)\]", r"\1", command)
    return [_argv(bare)] + ([_argv(full)] if full != bare else [])


def _argv(command: str) -> list[str]:
    """Arguments after `inferwatch`, up to a redirection, pipe or next command."""
    tokens = shlex.split(command)[1:]
    ends = [i for i, t in enumerate(tokens) if t in (">", ">>", "|", "&&", ";")]
    return tokens[: ends[0]] if ends else tokens


def test_the_readme_shows_configs_and_commands() -> None:
    assert _blocks("yaml"), "no ```yaml block found in README.md"
    assert {c.split()[1] for c in _commands()} >= {"baseline", "drift", "run"}


@pytest.mark.parametrize("block", _blocks("yaml"), ids=lambda b: b.splitlines()[0][:40])
def test_every_yaml_block_is_a_valid_config(block: str, tmp_path: Path) -> None:
    # Profile paths need not exist: a config is only parsed and validated. A block with only a `sidecar:` section
    # is what `inferwatch sidecar --config` reads.
    # A block with only an `alerts:` section is what `inferwatch demo --alerts-config` reads.
    raw = yaml.safe_load(block)
    assert isinstance(raw, dict) and ({"models", "sidecar", "alerts"} & set(raw)), \
        f"not an inferwatch config:\n{block}"
    if "models" in raw:
        load_config_text(block, source="README.md")
    elif "alerts" in raw:
        (tmp_path / "alerts.yaml").write_text(block)
        load_alerts_config(tmp_path / "alerts.yaml")
    if "sidecar" in raw:
        (tmp_path / "sidecar.yaml").write_text(block)
        load_sidecar_config(tmp_path / "sidecar.yaml")


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    subparsers = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = sorted(subparsers.choices)
    assert {"run", "drift", "baseline", "demo", "sidecar", "schema"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0, command
        assert f"inferwatch {command}" in capsys.readouterr().out


def _write_inputs(argv: list[str], folder: Path) -> None:
    """Generate the input files a command names: numeric features and predicted classes (.npz or .csv)."""
    rng = np.random.default_rng(0)
    for flag, name in itertools.pairwise(argv):
        if flag == "--from-events" and not (folder / name).exists():  # a day of the model's captured events
            model, version = argv[argv.index("--model") + 1].split("/")
            (folder / name).write_bytes(b"".join(encode_event(InferenceEvent(
                request_id=f"r{i}", time=1714521600.0 + 60 * i, model=model, version=version, task="classification",
                features=dict(zip("abc", map(float, rng.normal(size=3)), strict=True)))) + b"\n" for i in range(400)))
            continue
        if flag == "--from-run":  # a folder run holding its training data
            (folder / name).mkdir(parents=True, exist_ok=True)
            flag, name = "--data", str(Path(name) / "train.npz")
        if flag not in ("--data", "--reference", "--current") or (folder / name).exists():
            continue
        x = rng.normal(size=(400, 3))
        predictions = rng.integers(0, 3, size=400)
        if name.endswith(".npz"):
            np.savez(folder / name, X=x, feature_names=np.array(["a", "b", "c"]), predictions=predictions)
        else:
            rows = ["a,b,c,prediction"] + [f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{p}" for r, p in zip(x, predictions,
                                                                                             strict=True)]
            (folder / name).write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("command", _commands())
def test_every_readme_command_parses_and_the_offline_ones_run(command: str, tmp_path: Path) -> None:
    for argv in _variants(command):
        parser = _parser()
        parser.parse_args(argv)  # every command line shown is one the CLI accepts (argparse exits 2 if not)
        if argv[0] not in OFFLINE:
            continue
        _write_inputs(argv, tmp_path)
        done = subprocess.run([sys.executable, "-m", "monitor.cli", *argv], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        allowed = (0, 1) if argv[0] == "drift" else (0,)  # drift: 0 no change, 1 change, 2 error
        assert done.returncode in allowed, f"{command}: {done.stderr}"
        assert "Traceback" not in done.stderr


def test_inferwatch_schema_prints_the_published_schema() -> None:
    # The README links monitor/schemas/record.schema.json and says `inferwatch schema` prints it.
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "schema"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    published = README.parent / "monitor" / "schemas" / "record.schema.json"
    assert "monitor/schemas/record.schema.json" in README.read_text(encoding="utf-8")
    assert json.loads(done.stdout) == json.loads(published.read_text(encoding="utf-8"))
