"""Imports flow one way (docs DESIGN.md, "Layout"), checked on the source with ``ast``, every import counted,
including those inside functions:

* ``detectors`` knows nothing of the rest, except the shared exception root ``monitor.errors``;
* ``collectors`` never imports ``detectors`` (scipy) or the demo;
* nothing but the CLI imports the demo package (``monitor.demo``), which may use everything;
* the ``monitor`` core does not import ``collectors`` (the CLI's ``sidecar`` command and the demo may).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("monitor", "collectors", "detectors", "dashboards")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` gives ``a`` and ``a.b``); relative ones resolved."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _modules() -> dict[str, set[str]]:
    return {str(path.relative_to(ROOT)): _imports(path)
            for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offenders(files: dict[str, set[str]], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{file} imports {name}" for file, names in files.items() for name in names
                  if any(_within(name, f) for f in forbidden) and not any(_within(name, a) for a in allowed))


MODULES = _modules()


def _in(*prefixes: str, but: tuple[str, ...] = ()) -> dict[str, set[str]]:
    return {file: names for file, names in MODULES.items()
            if file.startswith(prefixes) and not file.startswith(but)}


def test_the_checker_sees_the_imports_it_must_judge() -> None:
    # Guards the guard: relative, nested and in-function imports are all resolved to absolute names.
    assert "monitor.errors" in MODULES["detectors/errors.py"]
    assert "monitor.demo.cnn.run_demo" in MODULES["monitor/demo/__init__.py"]
    assert any(_within(name, "monitor.demo") for name in MODULES["monitor/cli.py"])  # inside _demo()
    assert len(_in("detectors/")) > 10 and len(_in("monitor/demo/")) >= 5


def test_detectors_import_nothing_of_the_rest_but_the_exception_root() -> None:
    assert _offenders(_in("detectors/"), ("monitor", "collectors", "dashboards"), allowed=("monitor.errors",)) == []


def test_collectors_never_import_detectors() -> None:
    assert _offenders(_in("collectors/"), ("detectors",)) == []


def test_collectors_never_import_the_demo() -> None:
    assert _offenders(_in("collectors/"), ("monitor.demo",)) == []


def test_nothing_but_the_cli_imports_the_demo() -> None:
    outside = _in(*PACKAGES, but=("monitor/demo/", "monitor/cli.py"))
    assert _offenders(outside, ("monitor.demo",)) == []


def test_the_monitor_core_does_not_import_collectors() -> None:
    core = _in("monitor/", but=("monitor/demo/", "monitor/cli.py"))
    assert _offenders(core, ("collectors",)) == []


@pytest.mark.parametrize("module", ["charlm", "cnn", "llm", "llm_server", "shakespeare"])
def test_the_demo_models_and_drivers_live_in_the_demo_package(module: str) -> None:
    assert (ROOT / "monitor" / "demo" / f"{module}.py").is_file()
    assert not (ROOT / "monitor" / f"{module}.py").exists()
    assert not (ROOT / "monitor" / "demo.py").exists() and not (ROOT / "monitor" / "llm_demo.py").exists()
