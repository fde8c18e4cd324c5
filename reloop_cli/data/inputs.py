"""Which files an input names: a file, a folder (every data file under it), or a glob; and the
Hive-style `key=value` folders above each file, which become columns of its rows.

Spark, Hive and most log shippers write a day's logs as `logs/dt=2024-03-01/part-0.parquet`; the
`dt` there is as much a column as any in the file, and can be the time column. Names starting with
`.` or `_` (`_SUCCESS`, `.crc` checksums, our own temporary files) are not data.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from reloop_cli.errors import BadInput

FORMAT_OF_SUFFIX = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".libfm": "libfm",
    ".svm": "libfm",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst")  # text files; Parquet compresses inside
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # what Hive and Spark write for a null partition value


@dataclass(frozen=True)
class InputFile:
    """A data file and the partition values its folders give it, in folder order."""

    path: Path
    partition: tuple[tuple[str, str | None], ...] = ()

    def identity(self, content_digest: str) -> str:
        """What makes this input unique: its content, and its partition values when it has any
        (two identical part files under different `dt=` folders are different rows)."""
        if not self.partition:
            return content_digest
        payload = json.dumps([content_digest, list(self.partition)])
        return hashlib.sha256(payload.encode()).hexdigest()


def data_suffix(path: Path) -> str | None:
    """The suffix naming the format, under any compression suffix ('.csv' of 'a.csv.gz')."""
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else None


def compression_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return suffix if suffix in COMPRESSION_SUFFIXES else None


def is_data_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith((".", "_"))
        and data_suffix(path) in FORMAT_OF_SUFFIX
    )


def partition_of(path: Path, base: Path) -> tuple[tuple[str, str | None], ...]:
    """`key=value` folder names between `base` and the file, values URL-decoded as Hive writes
    them (`%3A` for ':'); the default-partition marker is a null."""
    try:
        folders = path.parent.relative_to(base).parts
    except ValueError:
        folders = path.parent.parts
    pairs = []
    for folder in folders:
        key, sep, value = folder.partition("=")
        if sep and key:
            decoded = unquote(value)
            pairs.append((key, None if decoded == HIVE_NULL else decoded))
    return tuple(pairs)


def _under(folder: Path) -> list[InputFile]:
    found = sorted(p for p in folder.rglob("*") if is_data_file(p) and not _hidden(p, folder))
    return [InputFile(p, partition_of(p, folder)) for p in found]


def _hidden(path: Path, base: Path) -> bool:
    """A file inside a folder that is not data (`_temporary/`, `.staging/`)."""
    return any(part.startswith((".", "_")) for part in path.relative_to(base).parent.parts)


def expand(inputs: list[str | Path]) -> list[InputFile]:
    """Files as given, and every data file under each given folder, in that order."""
    files: list[InputFile] = []
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            found = _under(path)
            if not found:
                raise BadInput(f"{path}: folder holds no data files ({_known()})")
            files.extend(found)
        elif path.is_file():
            files.append(InputFile(path, partition_of(path, Path(path.anchor))))
        else:
            raise BadInput(f"{path}: file not found")
    return files


def discover(logs: str) -> list[InputFile]:
    """Data files of a folder, a glob or one file (what `reloop run --logs` picks up), sorted
    for a stable order; partition folders count from the folder or the glob's fixed prefix."""
    path = Path(logs)
    if path.is_dir() or path.is_file():
        return expand([path])
    base = _fixed_prefix(logs)
    found = sorted(Path(p) for p in glob.glob(logs, recursive=True) if is_data_file(Path(p)))
    if not found:
        raise BadInput(f"{logs}: no log files found ({_known()})")
    return [InputFile(p, partition_of(p, base)) for p in found]


def _fixed_prefix(pattern: str) -> Path:
    """The folders of a glob before its first wildcard ('/data/dt=*/x.parquet' -> '/data')."""
    fixed = []
    for part in Path(pattern).parts[:-1]:
        if any(char in part for char in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _known() -> str:
    formats = ", ".join(sorted({s.lstrip(".") for s in FORMAT_OF_SUFFIX}))
    return f"looked for {formats}, text ones also as {'/'.join(COMPRESSION_SUFFIXES)}"
