"""The layout holds: every module imports, packages import only the layers below them, imports
sit at the top of library modules, no module outgrows a screenful of screens, and `reloop
--help` does not pay for torch."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import reloop_cli
from reloop_cli.models import MODELS
from reloop_cli.spec.sections import MODEL_NAMES
from tests.helpers import REPO

PACKAGE = Path(reloop_cli.__file__).parent
# Optional extras: importing them at the top would make the core need them.
OPTIONAL = {"mlflow", "onnx", "onnxruntime"}
MAX_LINES = 420  # "a module over ~400 lines wants splitting" (STYLE.md)


def library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "cli" not in p.relative_to(PACKAGE).parts)


def test_every_module_imports():
    names = [m.name for m in pkgutil.walk_packages(reloop_cli.__path__, "reloop_cli.")]
    assert "reloop_cli.training.train" in names and "reloop_cli.store.workspace" in names
    for name in names:
        if name != "reloop_cli.__main__":  # that one runs the CLI
            importlib.import_module(name)


def _nested_imports(path: Path) -> list[str]:
    """'file:line module' of every import inside a function body."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                modules = [alias.name for alias in inner.names]
            elif isinstance(inner, ast.ImportFrom):
                modules = [inner.module or ""]
            else:
                continue
            for module in modules:
                if module.split(".")[0] not in OPTIONAL:
                    found.append(f"{path.relative_to(REPO)}:{inner.lineno} {module}")
    return found


def test_library_modules_import_at_the_top_only():
    """Imports inside functions hid three import cycles; only the CLI (to keep `--help` free of
    torch) and the optional extras may import late."""
    nested = [hit for path in library_modules() for hit in _nested_imports(path)]
    assert nested == []


def test_no_module_outgrows_its_job():
    sizes = {
        str(path.relative_to(REPO)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_the_spec_names_exactly_the_models_of_the_zoo():
    assert set(MODEL_NAMES) == set(MODELS)


def test_layers_import_only_downwards():
    """The import-linter contract in pyproject.toml (also run by .ci/run)."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    result = subprocess.run([command], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from reloop_cli.cli import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "print('torch' in sys.modules, 'scipy' in sys.modules)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.split() == ["False", "False"]
