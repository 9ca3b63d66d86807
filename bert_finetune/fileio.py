"""Atomic file writes and output-directory checks (local paths only).

Every result file is written to a temporary name in the same directory and renamed into place on
success, so an interrupted run never leaves a file that looks complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import IO

from bert_finetune.errors import UserError


def _create_temp(directory: str, base: str) -> tuple[int, str]:
    """Creates a new, hidden temporary file in `directory`; returns (fd, path)."""
    # Same directory as the target, so os.replace is a rename within one filesystem. Mode 0o666
    # (not mkstemp's 0o600) so the umask gives the file the permissions a plain open() would.
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Opens a temporary file beside `path`; renames it to `path` only if the block succeeds.

    `mode` is "w" (text) or "wb" (binary). On any exception the temporary file is removed and the
    exception propagates; an existing file at `path` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        if "b" in mode:
            f = os.fdopen(fd, mode)
        else:
            # newline="" keeps "\n" as written on every platform (byte-compatible files).
            f = os.fdopen(fd, mode, encoding=encoding, newline="")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> None:
    """Writes `data` (text or bytes) to `path` atomically."""
    if isinstance(data, bytes):
        with atomic_open(path, "wb") as f:
            f.write(data)
    else:
        with atomic_open(path, "w", encoding=encoding) as f:
            f.write(data)


def ensure_output_dir(path: str | os.PathLike) -> None:
    """Creates the directory `path` (and its parents) unless it exists; a file there is an error."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"--output_dir={path} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        # E.g. a parent component is a file, or no permission.
        raise UserError(f"--output_dir={path} cannot be created: {e.strerror or e}") from e
