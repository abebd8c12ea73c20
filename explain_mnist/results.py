"""Results as JSON: dataclasses and numpy values made plain, written atomically (temporary file, then rename)."""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def to_jsonable(value):
    """Return ``value`` with dataclasses, numpy arrays and numpy scalars turned into plain JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Path):
        return str(value)
    return value


def write_atomic(path: str | os.PathLike, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(path: str | os.PathLike, result) -> Path:
    """Write ``result`` (a dataclass, dict, ...) as indented JSON, atomically; return the path."""
    text = json.dumps(to_jsonable(result), indent=2) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode()))


def read_json(path: str | os.PathLike):
    """Return the parsed JSON of a result file."""
    with open(path) as f:
        return json.load(f)
