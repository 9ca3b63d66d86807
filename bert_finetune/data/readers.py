"""Reading the data files of classification tasks: TSV, CSV and JSON Lines.

Every problem with a file becomes a one-line `UserError` naming the file (and line): missing file,
bytes that are not UTF-8, a CSV row the csv module rejects, a JSONL line that is not a JSON object.
Rows come back with their 1-based physical line numbers so that callers can name the line too.

Paths with a scheme (`gs://...`, `ram://...`) are read through `tf.io.gfile`, as the original's
`tf.gfile.Open` did; TensorFlow is imported only then, so local reads stay light (`is_remote`,
`is_dir`, `is_file` come from `bert_finetune.fileio` and are re-exported here).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

from bert_finetune.errors import UserError
from bert_finetune.fileio import gfile, is_dir, is_file, is_remote

_BOM = b"\xef\xbb\xbf"


class Row(NamedTuple):
    """One parsed record: `line` is its first physical line (1-based), `fields` its columns."""

    line: int
    fields: list[str]


class JsonRow(NamedTuple):
    """One JSONL record: `line` is its 1-based line number, `obj` the decoded object."""

    line: int
    obj: dict[str, Any]


def data_file(data_dir: str, *parts: str) -> str:
    """Joins `data_dir` and `parts`, raising UserError if the directory or the file is missing."""
    if not data_dir:
        raise UserError("data_dir is empty: give the folder that holds the task's files")
    if not is_dir(data_dir):
        raise UserError(f"data_dir {data_dir}: no such directory")
    path = os.path.join(data_dir, *parts)
    if not is_file(path):
        raise UserError(f"{path}: no such file")
    return path


def _open_binary(path: str) -> IO[bytes]:
    try:
        if is_remote(path):
            if not is_file(path):
                raise UserError(f"{path}: no such file")
            return gfile().GFile(path, "rb")
        return open(path, "rb")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, not a file") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from None


def iter_lines(path: str) -> Iterator[tuple[int, str]]:
    """Yields `(line_number, text)` for each physical line, decoded as UTF-8 (a BOM is dropped).

    Decoding line by line (rather than the whole file at once) is what lets a bad byte be reported
    with its line; line ends are kept so that `csv` sees the records exactly as in the file.
    """
    with _open_binary(path) as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]  # MRPC's files start with one
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(
                    f"{path}, line {number}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte "
                    f"{e.start + 1} of the line); save the file as UTF-8"
                ) from None


def _read_delimited(path: str, **fmt: Any) -> list[Row]:
    lines = iter_lines(path)
    current = 0  # the physical line last handed to csv, for the error message

    def feed() -> Iterator[str]:
        nonlocal current
        for number, text in lines:
            current = number  # read below: csv does not say which line a record came from
            yield text

    reader = csv.reader(feed(), **fmt)
    rows: list[Row] = []
    while True:
        start = current + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise UserError(f"{path}, line {current}: cannot parse the row: {e}") from None
        if fields:  # blank lines (e.g. a trailing empty line) carry no record
            rows.append(Row(start, fields))
    return rows


def read_tsv(path: str, quotechar: str | None = None) -> list[Row]:
    """Reads a tab-separated file like the original's `_read_tsv`.

    With `quotechar=None` (the default, as in run_classifier.py) quotes are ordinary characters
    (`csv.QUOTE_NONE`): GLUE's text is full of unbalanced `"` that must stay in the text.
    """
    if quotechar is None:
        return _read_delimited(path, delimiter="\t", quoting=csv.QUOTE_NONE)
    return _read_delimited(path, delimiter="\t", quotechar=quotechar)


def read_csv(path: str) -> list[Row]:
    """Reads a comma-separated file with standard (RFC 4180 / Excel) double-quote quoting."""
    return _read_delimited(path, delimiter=",", quotechar='"')


def read_jsonl(path: str) -> list[JsonRow]:
    """Reads a JSON Lines file: one JSON object per line; blank lines are skipped."""
    rows: list[JsonRow] = []
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {number}: not valid JSON: {e.msg} (column {e.colno})") \
                from None
        if not isinstance(obj, dict):
            raise UserError(
                f"{path}, line {number}: expected a JSON object, found {type(obj).__name__}"
            )
        rows.append(JsonRow(number, obj))
    return rows
