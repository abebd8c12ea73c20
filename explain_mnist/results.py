"""Results as JSON: dataclasses and numpy values made plain, written safely.

Every output file (results and figures) is written the same way (`write_atomic`):

- through a symbolic link to its target: the temporary file is made beside the *resolved* path and renamed
  onto it, so the link stays a link;
- never over something that is not a regular file (a device such as ``/dev/full``, a fifo, a socket, a
  folder): that is refused with a `UserError` naming the path;
- with the mode a new file gets from the user's umask (``0o666 & ~umask``), or the mode of the file it
  replaces;
- atomically: a temporary file, then a rename, so an interrupted write leaves the old file whole.

`check_output` runs the same checks before any work (the scripts call it through `cli.check_common`), so a
path that cannot be written is refused at once. ``-`` as a JSON path means standard output (`STDOUT`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np

from explain_mnist.errors import UserError

STDOUT = "-"
FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}   # a figure's suffix -> the format written


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


def user_umask() -> int:
    """Return the process's umask (read from /proc where it can be, without changing it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def resolved(path: str | os.PathLike) -> Path:
    """Return the file that writing ``path`` should change: symbolic links followed (also to a missing target)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def _refuse_target(label: str, target: Path) -> None:
    """Raise UserError if ``target`` exists and is not a regular file."""
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):   # absent (a folder on the way that is a file: see the caller)
        return
    except OSError as exc:
        raise UserError(f"{label}: cannot check {target} ({exc.strerror}); choose another file") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{label} is a folder; give a file name")
    if not stat.S_ISREG(mode):
        kind = ("a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a fifo" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise UserError(f"{label}: {target} is {kind}, not a regular file; refusing to replace it, give a file name")


def _missing_folders(folder: Path) -> tuple[Path, list[Path]]:
    """Return the nearest existing ancestor of ``folder`` (itself included) and the folders below it, top first."""
    missing = []
    existing = folder
    while not os.path.lexists(existing):
        missing.append(existing)
        existing = existing.parent
    return existing, missing[::-1]


def check_output(path: str | os.PathLike, label: str | None = None) -> None:
    """Raise UserError, naming the path and the reason, if a result cannot be written to ``path``.

    Checks what `write_atomic` needs, without leaving anything behind: the target is a regular file or
    absent; its folder exists or can be created (a missing one is created and removed again); a temporary
    file can be created in it.
    """
    label = label or str(path)
    if str(path) == STDOUT:
        return
    target = resolved(path)
    _refuse_target(label, target)
    existing, missing = _missing_folders(target.parent)
    if not existing.is_dir():
        raise UserError(f"{label}: {existing} is a file, not a folder; choose another place")
    made = []
    try:
        for folder in missing:
            try:
                folder.mkdir()
            except OSError as exc:
                raise UserError(f"{label}: cannot create the folder {folder} ({exc.strerror}); "
                                f"choose another place") from None
            made.append(folder)
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        except OSError as exc:
            raise UserError(f"{label}: cannot write in {target.parent} ({exc.strerror}); "
                            f"choose another place") from None
        os.close(fd)
        os.unlink(probe)
    finally:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass


def figure_format(path: str | os.PathLike) -> str:
    """Return the format named by a figure path's suffix, or raise UserError listing the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in FIGURE_FORMATS:
        raise UserError(f"--figure {path}: unsupported format {suffix or '(no suffix)'}; "
                        f"supported: {', '.join(FIGURE_FORMATS)}")
    return FIGURE_FORMATS[suffix]


def write_atomic(path: str | os.PathLike, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``'s target, then rename it onto the target.

    Follows symbolic links, refuses targets that are not regular files (UserError), creates missing folders,
    and gives the file the mode of the file it replaces or ``0o666 & ~umask``. Returns the path written.
    """
    target = resolved(path)
    _refuse_target(str(path), target)
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        mode = 0o666 & ~user_umask()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def json_text(result) -> str:
    """Return ``result`` (a dataclass, dict, ...) as indented JSON text ending in a newline."""
    return json.dumps(to_jsonable(result), indent=2) + "\n"


def write_json(path: str | os.PathLike, result) -> Path | None:
    """Write ``result`` as indented JSON, atomically (`write_atomic`), or to standard output if ``path`` is ``-``."""
    text = json_text(result)
    if str(path) == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    return write_atomic(path, lambda f: f.write(text.encode()))


def read_json(path: str | os.PathLike):
    """Return the parsed JSON of a result file."""
    with open(path) as f:
        return json.load(f)
