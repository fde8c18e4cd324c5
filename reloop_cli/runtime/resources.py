"""Files that ship with reloop: the bundled sample log and the example pipeline specs.

In a source checkout (or editable install) they live at the repository's top level; a wheel
carries copies under reloop_cli/_bundled/.
"""

from __future__ import annotations

from pathlib import Path

from reloop_cli.errors import BadInput

_PACKAGE = Path(__file__).resolve().parents[1]  # reloop_cli/


def bundled(relative: str) -> Path:
    """Path of a shipped file or folder, e.g. 'sample_data' or 'pipelines/sample.toml'."""
    for root in (_PACKAGE / "_bundled", _PACKAGE.parent):
        candidate = root / relative
        if candidate.exists():
            return candidate
    raise BadInput(f"bundled file '{relative}' not found; reinstall reloop")


def sample_files() -> list[Path]:
    files = sorted(bundled("sample_data").glob("*.parquet"))
    if not files:
        raise BadInput(
            f"{bundled('sample_data')}: no sample files; run `reloop synth` to make some"
        )
    return files
