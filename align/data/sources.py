"""Reading raw rows from files, folders, builtin samples, the datasets hub and plugins.

Everything here returns rows as plain Python objects (dicts, or records from plugins) with a human-readable
location per row, so later errors can point at "train.jsonl line 7" rather than at an Arrow offset.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from align.config import import_callable
from align.data.spec import DataError, SourceSpec

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
BUILTINS = {
    "bundled": "prefs.jsonl",
    "bundled-sft": "sft.jsonl",
    "bundled-eval-prompts": "eval_prompts.jsonl",
}
ENTRY_POINT_GROUP = "align.datasets"
_SPLIT_WORDS = ("train", "test", "validation", "valid", "eval", "dev")


@dataclass
class RawSource:
    """Rows of one source before format conversion."""

    name: str
    rows: list[Any]
    locations: list[str]
    kind: str  # file | folder | builtin | hub | plugin
    files: list[dict[str, str]] = field(default_factory=list)  # [{path, sha256}] for local files


def source_name(spec: SourceSpec) -> str:
    """Short name used in generated ids (``<name>-<row>``) and in messages."""
    if spec.plugin and not spec.path:
        return spec.plugin.rpartition(":")[2] or spec.plugin
    if spec.path.startswith("builtin:"):
        return spec.path.partition(":")[2]
    path = Path(spec.path).expanduser()
    if _looks_local(spec.path):
        return path.stem if path.suffix in FILE_SUFFIXES else path.name
    name = spec.path.rstrip("/").rpartition("/")[2]
    if spec.name:
        name += f"-{spec.name}"
    if spec.split != "train":
        name += f"-{re.sub(r'[^A-Za-z0-9_.-]+', '_', spec.split)}"
    return name


def _looks_local(path: str) -> bool:
    p = Path(path).expanduser()
    return p.exists() or p.suffix in FILE_SUFFIXES or path.startswith((".", "/", "~"))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _clean(value: Any) -> Any:
    """NaN (pandas' and Arrow's missing value) -> None, recursively, so a blank cell reads as 'no value'."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _bad_utf8(path: Path, data: bytes, exc: UnicodeDecodeError, unit: str = "line") -> DataError:
    """A one-paragraph error for bytes that are not UTF-8, naming the file, the line and the column."""
    lineno = data.count(b"\n", 0, exc.start) + 1
    col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return DataError(
        f"{path} {unit} {lineno}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {col}). Data files must be "
        "UTF-8: re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`) or remove that line."
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{path}: cannot read the data file ({exc.strerror or exc}); check its permissions and path."
        ) from exc


def _read_jsonl(path: Path) -> tuple[list[Any], list[str]]:
    # Parsed line by line (not via Arrow) so a decode error names its line and each row keeps its own keys:
    # Arrow's schema unification would turn a missing key into null and reject rows with mixed types.
    rows: list[Any] = []
    locations: list[str] = []
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_utf8(path, data, exc) from None
    # Lines split on \n only (as a file object would; str.splitlines also splits on U+2028 inside strings).
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path} line {lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line of a .jsonl file must be one JSON object"
            ) from exc
        except RecursionError:
            raise DataError(f"{path} line {lineno}: JSON nested too deeply to read") from None
        locations.append(f"{path.name} line {lineno}")
    return rows, locations


def _read_json(path: Path) -> tuple[list[Any], list[str]]:
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_utf8(path, raw, exc) from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: JSON Lines under a .json name
            return _read_jsonl(path)
        raise DataError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if isinstance(data, dict):  # one row (JSON Lines with a single line under a .json name)
        data = [data]
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json file must hold a list of rows, found {type(data).__name__}")
    return data, [f"{path.name} row {i}" for i in range(len(data))]


def _read_csv(path: Path, text_columns: tuple[str, ...]) -> tuple[list[Any], list[str]]:
    import pandas as pd

    # Text columns stay text (an id "007" or a prompt "42" must not become a number); other columns keep
    # pandas' type inference so numeric annotator labels and margins arrive as numbers.
    raw = _read_bytes(path)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The header is row 1, so (for cells without line breaks) line N is the spreadsheet's row N.
        raise _bad_utf8(path, raw, exc, unit="row") from None
    try:
        df = pd.read_csv(io.BytesIO(raw), dtype={c: str for c in text_columns}, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(
            f"{path}: could not parse the CSV file ({' '.join(str(exc).split())}). Check the quoting and that every "
            "row has as many fields as the header."
        ) from exc
    rows = [_clean(r) for r in df.astype(object).where(df.notna(), None).to_dict("records")]
    return rows, [f"{path.name} row {i + 2}" for i in range(len(rows))]  # spreadsheet row: header is row 1


def _read_parquet(path: Path) -> tuple[list[Any], list[str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise DataError(f"{path}: could not read the parquet file ({type(exc).__name__}: {exc})") from exc
    rows = [_clean(r) for r in table.to_pylist()]
    return rows, [f"{path.name} row {i}" for i in range(len(rows))]


def read_table_file(path: Path, text_columns: tuple[str, ...] = ()) -> tuple[list[Any], list[str]]:
    """Rows and per-row locations of one .jsonl / .json / .csv / .parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path, text_columns)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {', '.join(FILE_SUFFIXES)}")


def list_data_files(folder: Path) -> list[Path]:
    """Supported data files under ``folder`` (recursively), sorted by relative path."""
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FILE_SUFFIXES),
        key=lambda p: p.relative_to(folder).as_posix(),
    )
    if not files:
        raise DataError(f"folder {folder} holds no data files ({', '.join(FILE_SUFFIXES)})")
    splits = {}
    for p in files:
        for part in p.relative_to(folder).with_suffix("").parts:
            word = re.split(r"[-_.]", part.lower())[0]
            if word in _SPLIT_WORDS:
                splits.setdefault(word, p.name)
    if len(splits) > 1:
        # Reading them all would silently mix eval rows into training.
        raise DataError(
            f"folder {folder} holds files of several splits ({', '.join(sorted(splits.values()))}); point `path` "
            "at one file or at a folder holding one split, and give the eval split as `eval_sources`"
        )
    return files


def samples_dir() -> resources.abc.Traversable:
    """The package's bundled data folder (``align/data/samples``)."""
    return resources.files("align.data").joinpath("samples")


def resolve_builtin(name: str) -> resources.abc.Traversable:
    """The packaged file for ``builtin:<name>``."""
    if name not in BUILTINS:
        raise DataError(
            f"unknown builtin dataset 'builtin:{name}'; known: {', '.join('builtin:' + k for k in BUILTINS)}"
        )
    target = samples_dir().joinpath(BUILTINS[name])
    if not target.is_file():
        raise DataError(f"builtin:{name} should be packaged as align/data/samples/{BUILTINS[name]}, which is missing")
    return target


def load_plugin(ref: str) -> Callable[..., Any]:
    """Resolve ``module:function`` or an entry-point name in the ``align.datasets`` group."""
    if ":" in ref:
        return import_callable(ref, f"plugin '{ref}'", DataError)
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == ref]
    if not found:
        known = sorted(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))
        raise DataError(
            f"plugin '{ref}' is not 'module:function' and no package registers it in the entry-point group "
            f"'{ENTRY_POINT_GROUP}'; registered: {', '.join(known) or '(none)'}"
        )
    return found[0].load()


def _read_plugin(spec: SourceSpec, name: str) -> RawSource:
    func = load_plugin(spec.plugin or "")
    produced = func(spec)
    try:
        rows = list(produced)
    except TypeError as exc:
        raise DataError(
            f"plugin '{spec.plugin}' must return or yield rows (dicts) or records, found {type(produced).__name__}"
        ) from exc
    return RawSource(name, rows, [f"plugin {spec.plugin} item {i}" for i in range(len(rows))], "plugin")


def _read_hub(spec: SourceSpec, name: str) -> RawSource:
    import datasets

    try:
        ds = datasets.load_dataset(spec.path, spec.name, split=spec.split, revision=spec.revision)
    except Exception as exc:  # offline, missing, gated or malformed: all end the same way for the user
        raise DataError(
            f"could not load dataset '{spec.path}' ({f'config {spec.name!r}, ' if spec.name else ''}split "
            f"'{spec.split}') with datasets: "
            f"{type(exc).__name__}: {exc}. Without network access use a local file instead: "
            "path: data/prefs.jsonl (.jsonl, .json, .csv, .parquet or a folder of them)"
        ) from exc
    if spec.max_rows is not None and len(ds) > spec.max_rows:
        ds = ds.select(range(spec.max_rows))
    rows = [_clean(r) for r in ds]
    return RawSource(name, rows, [f"{spec.path} {spec.split} row {i}" for i in range(len(rows))], "hub")


def _read_files(paths: list[Path], text_columns: tuple[str, ...]) -> tuple[list[Any], list[str], list[dict]]:
    rows: list[Any] = []
    locations: list[str] = []
    files = []
    for p in paths:
        r, loc = read_table_file(p, text_columns)
        rows += r
        locations += loc
        files.append({"path": str(p), "sha256": file_sha256(p)})
    return rows, locations, files


def text_columns(spec: SourceSpec) -> tuple[str, ...]:
    """Columns that must be read as text from a CSV (canonical names and their mapped user columns)."""
    names = {"id", "prompt", "chosen", "rejected", "completion", "system"}
    mapped = {spec.columns[k] for k in names if spec.columns.get(k)}
    return tuple(sorted(names | mapped))


def read_source(spec: SourceSpec, name: str | None = None) -> RawSource:
    """Read every row of one source (the first ``max_rows`` when set)."""
    name = name or source_name(spec)
    if spec.plugin:
        raw = _read_plugin(spec, name)
    elif spec.path.startswith("builtin:"):
        with ExitStack() as stack:
            path = stack.enter_context(resources.as_file(resolve_builtin(spec.path.partition(":")[2])))
            rows, locations, files = _read_files([path], text_columns(spec))
        raw = RawSource(name, rows, locations, "builtin", files)
    elif _looks_local(spec.path):
        path = Path(spec.path).expanduser()
        if path.is_dir():
            rows, locations, files = _read_files(list_data_files(path), text_columns(spec))
            raw = RawSource(name, rows, locations, "folder", files)
        elif path.is_file():
            rows, locations, files = _read_files([path], text_columns(spec))
            raw = RawSource(name, rows, locations, "file", files)
        else:
            raise DataError(f"data source not found: {spec.path} (no such file or folder)")
    else:
        raw = _read_hub(spec, name)
    if spec.max_rows is not None:
        raw.rows, raw.locations = raw.rows[: spec.max_rows], raw.locations[: spec.max_rows]
    return raw


def subsample_indices(n: int, weight: float, seed: int, name: str) -> list[int]:
    """Deterministic ``round(weight * n)`` row indices (at least one), in their original order.

    Each row's rank comes from a hash of (seed, source name, index), so it does not depend on other rows.
    """
    if weight >= 1 or n == 0:
        return list(range(n))
    k = max(1, round(weight * n))

    def rank(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:{name}:{i}".encode()).digest()

    return sorted(sorted(range(n), key=rank)[:k])
