"""Writing outputs safely: never over an input, never half a file, readable by other users.

A WebUI often runs as another user than the one who converts or generates, so files are 0644 (safetensors
and tempfile create 0600). Each file is written to a temporary name in its folder and renamed: an
interrupted run leaves the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

FILE_MODE = 0o644


class OutputError(ValueError):
    """An output path that must not be written; the message names it and what to do."""


def same_file(a: str | Path, b: str | Path) -> bool:
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output(path: str | Path, what: str, inputs: Iterable[str | Path | None], suffixes: Iterable[str]) -> Path:
    """Refuse, before any work, an output that would overwrite an input or has a suffix we cannot write."""
    path = Path(path)
    suffixes = tuple(suffixes)
    if path.suffix.lower() not in suffixes:
        raise OutputError(f"{what} {path}: unsupported file type; use one of {', '.join(suffixes)}")
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputError(f"{what} {path} is also an input; refusing to overwrite it: choose another name")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    return path


def write_atomic(path: str | Path, write: Callable[[Path], None], mode: int = FILE_MODE) -> Path:
    """Call write(temporary_path), then give it `mode` and rename it to `path` (same folder, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        write(temporary)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | Path, data: bytes, mode: int = FILE_MODE) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_bytes(data), mode)


def copy_file_atomic(source: str | Path, path: str | Path, mode: int = FILE_MODE) -> Path:
    """Copy source to path so that a reader (another WebUI sharing the folder) never sees half a file, and a
    failed copy (a full disk) leaves none."""
    return write_atomic(path, lambda temporary: shutil.copyfile(source, temporary), mode)


def write_text_atomic(path: str | Path, text: str, mode: int = FILE_MODE) -> Path:
    return write_atomic(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), mode)
