"""File access for local and remote (`gs://`, `ram://`) paths; atomic writes; output-dir checks.

Local paths take the plain `os` / `open` route; a path with a scheme (`"://"`) goes through
`tf.io.gfile`, as the original's `tf.gfile` did everywhere, and TensorFlow is imported only then.
Remote failures (`tf.errors.OpError`) come out as `OSError` (`FileNotFoundError` when missing), so
that callers handle one kind of error for both.

Every result file is written to a temporary name and renamed into place on success, so an
interrupted run never leaves a file that looks complete. Remotely the rename is a copy + delete
(GCS has no rename), but the target object still appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import secrets
from collections.abc import Iterator
from typing import IO

from bert_finetune.errors import UserError


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` has a scheme (`gs://...`) and so must go through tf.io.gfile."""
    return "://" in os.fspath(path)


def gfile():
    """`tf.io.gfile`, imported on first use: a local-only run must not pay for TensorFlow."""
    import tensorflow as tf

    return tf.io.gfile


@contextlib.contextmanager
def _os_errors(path: str) -> Iterator[None]:
    """Turns tf.errors from a gfile call on `path` into FileNotFoundError / OSError."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.NotFoundError:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path) from None
    except tf.errors.OpError as e:
        first = (e.message or type(e).__name__).strip().splitlines()[0]
        raise OSError(errno.EIO, first, path) from None


def is_dir(path: str) -> bool:
    """Whether `path` is a directory (local or `scheme://`)."""
    return gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def is_file(path: str) -> bool:
    """Whether `path` exists and is not a directory (local or `scheme://`).

    Raises OSError when a remote store cannot be asked (no network, no permission).
    """
    if not is_remote(path):
        return os.path.isfile(path)
    with _os_errors(path):
        return gfile().exists(path) and not gfile().isdir(path)


def read_bytes(path: str) -> bytes:
    """The whole content of `path`; OSError (FileNotFoundError) when it cannot be read."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    with _os_errors(path):
        if gfile().isdir(path):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        with gfile().GFile(path, "rb") as f:
            return f.read()


def read_text(path: str) -> str:
    """The content of `path` decoded as UTF-8, line ends as `\\n` (like `open(path).read()`).

    Raises OSError when it cannot be read, UnicodeDecodeError (a ValueError) on bad bytes.
    """
    if not is_remote(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    return read_bytes(path).decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def file_size(path: str) -> int:
    """Size of the file `path` in bytes."""
    if not is_remote(path):
        return os.path.getsize(path)
    with _os_errors(path):
        return gfile().stat(path).length


def remove_if_exists(path: str) -> None:
    """Deletes the file `path`; a missing file is not an error."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        return
    with contextlib.suppress(FileNotFoundError), _os_errors(path):
        gfile().remove(path)


def replace(src: str, dst: str) -> None:
    """Renames `src` to `dst`, replacing `dst` (`os.replace`; a copy + delete on GCS)."""
    if not is_remote(dst):
        os.replace(src, dst)
        return
    with _os_errors(dst):
        gfile().rename(src, dst, overwrite=True)


def temp_path(path: str) -> str:
    """A new temporary name for writing `path`, in the same directory (so a rename is enough).

    Local: the hidden `.<name>.<random>.tmp`; remote: `<path>.tmp-<random>` (created lazily by the
    caller's writer, so it is not reserved; 48 random bits make a clash with a concurrent writer
    unlikely).
    """
    if is_remote(path):
        return f"{path}.tmp-{secrets.token_hex(6)}"
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")


def _create_temp(path: str) -> tuple[int, str]:
    """Creates a new, hidden temporary file beside the local `path`; returns (fd, temp path)."""
    # Mode 0o666 (not mkstemp's 0o600) so the umask gives the file the permissions a plain
    # open() would.
    while True:
        tmp = temp_path(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


class _GFileRaw(io.RawIOBase):
    """A binary tf.io.gfile.GFile as a raw stream, so that `io` layers give the full file API
    (`writelines`, `print(file=...)`, any text encoding) that GFile itself lacks."""

    def __init__(self, f):
        super().__init__()
        self._f = f

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self._f.write(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._f.close()  # GCS uploads here: a failure must surface
            finally:
                super().close()


@contextlib.contextmanager
def _atomic_open_remote(path: str, mode: str, encoding: str | None) -> Iterator[IO]:
    tmp = temp_path(path)
    try:
        # Remote writes fail late (GCS uploads on close): errors from the block count too.
        with _os_errors(tmp):
            f = io.BufferedWriter(_GFileRaw(gfile().GFile(tmp, "wb")))
            if "b" not in mode:
                f = io.TextIOWrapper(f, encoding=encoding or "utf-8", newline="")
            with f:
                yield f
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_if_exists(tmp)
        raise


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO]:
    """Opens a temporary file beside `path`; renames it to `path` only if the block succeeds.

    `mode` is "w" (text) or "wb" (binary); `path` may be local or remote (`gs://`). On
    any exception the temporary file is removed and the exception propagates; an existing file
    at `path` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    path = os.fspath(path)
    if is_remote(path):
        with _atomic_open_remote(path, mode, encoding) as f:
            yield f
        return
    fd, tmp = _create_temp(path)
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
    try:
        if is_remote(path):
            with _os_errors(path):
                if gfile().exists(path) and not gfile().isdir(path):
                    raise UserError(f"--output_dir={path} is a file, not a directory")
                gfile().makedirs(path)
            return
        if os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"--output_dir={path} is a file, not a directory")
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        # E.g. a parent component is a file, no permission, or the bucket cannot be reached.
        raise UserError(f"--output_dir={path} cannot be created: {e.strerror or e}") from e


def json_line(record) -> str:
    """`record` as one JSON line ("...\\n"): UTF-8 text kept readable, but U+2028/U+2029 escaped.

    json.dumps(ensure_ascii=False) leaves those two separators raw; they are valid JSON, yet
    Python's str.splitlines() and JavaScript readers break the line there.
    """
    text = json.dumps(record, ensure_ascii=False)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"
