"""`GenericProcessor`: a user's own classification (or regression) data set, no code needed.

The files are TSV (`csv.QUOTE_NONE`, as GLUE), CSV (standard double-quote quoting) or JSON Lines
(one object per line). Columns are named by header name or 0-based index: with a header, a value
that matches a column name is that column, else a string of digits (or an int) is an index;
without a header only indices work. In JSONL, columns are keys.

Labels: pass `labels=[...]` to fix their order (the label ids follow it); otherwise they are
inferred from the train file as its sorted distinct labels, numerically when they are all integers
("2" < "10"), else by string; sorting (not first appearance) keeps the ids the same whichever
rows the train file holds first. Test examples always get a placeholder label (the first label, or
"0.0" for regression), so a test file may lack the label column.
"""

from __future__ import annotations

import json
import re

from bert_finetune.data import readers
from bert_finetune.data.examples import DataProcessor, InputExample
from bert_finetune.errors import UserError

FORMATS = ("tsv", "csv", "jsonl")

Column = str | int
# (line, text_a, text_b, raw label): one data record with the fields the processor needs.
_Record = tuple[int, str, str | None, str | None]


def _sort_labels(labels: set[str]) -> list[str]:
    if all(re.fullmatch(r"[+-]?\d+", x) for x in labels):
        return sorted(labels, key=int)
    return sorted(labels)


class GenericProcessor(DataProcessor):
    """Reads `train_file`, `dev_file` and `test_file` (relative to data_dir) of one format.

    Args:
      input_format: "tsv", "csv" or "jsonl".
      text_a_column / text_b_column / label_column: column names or 0-based indices (JSONL: keys);
        text_b_column=None for single-sentence tasks.
      has_header: whether the first row of each TSV/CSV file names the columns (unused for JSONL).
      labels: the label strings in id order, or None (or []) to infer them from the train file.
      train_file / dev_file / test_file: default `train.<format>` etc.
      is_regression: the label is a real number (the score's text is kept); get_labels() is [None].
      data_dir: where to infer labels from when get_labels() comes before get_train_examples().
    """

    def __init__(
        self,
        input_format: str,
        text_a_column: Column,
        text_b_column: Column | None = None,
        *,
        label_column: Column,
        has_header: bool = True,
        labels: list[str] | None = None,
        train_file: str | None = None,
        dev_file: str | None = None,
        test_file: str | None = None,
        is_regression: bool = False,
        data_dir: str | None = None,
    ):
        fmt = str(input_format).lower()
        if fmt not in FORMATS:
            raise UserError(f"input_format {input_format!r}: use one of {', '.join(FORMATS)}")
        for what, col in (("text_a_column", text_a_column), ("label_column", label_column)):
            if col is None or col == "":
                raise UserError(f"generic task: {what} is required")
        if labels is not None and len(labels) == 0:
            labels = None  # an empty list flag means "not given": infer them
        if labels is not None:
            if is_regression:
                raise UserError("generic task: labels cannot be given for a regression task")
            labels = [str(x) for x in labels]
            if len(set(labels)) != len(labels):
                raise UserError(f"generic task: labels must be distinct: {labels}")
        self.input_format = fmt
        self.text_a_column = text_a_column
        self.text_b_column = text_b_column
        self.label_column = label_column
        self.has_header = has_header
        self.labels = labels
        self.train_file = train_file or f"train.{fmt}"
        self.dev_file = dev_file or f"dev.{fmt}"
        self.test_file = test_file or f"test.{fmt}"
        self.is_regression = is_regression
        self._data_dir = data_dir
        self._inferred: list[str] | None = None

    # -- DataProcessor API -------------------------------------------------------------------

    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        """See base class; infers the labels from this file when none were given."""
        path = readers.data_file(data_dir, self.train_file)
        records = self._read(path, need_label=True)
        if self._needs_inference():
            self._inferred = _sort_labels({r[3] for r in records})
        self._data_dir = self._data_dir or data_dir
        return self._examples(path, records, "train")

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        self._data_dir = self._data_dir or data_dir
        path = readers.data_file(data_dir, self.dev_file)
        return self._examples(path, self._read(path, need_label=True), "dev")

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        """See base class; the label column is not read (placeholder labels)."""
        self._data_dir = self._data_dir or data_dir
        path = readers.data_file(data_dir, self.test_file)
        return self._examples(path, self._read(path, need_label=False), "test")

    def get_labels(self) -> list:
        """The given labels, or those inferred from the train file (see the module doc)."""
        if self.is_regression:
            return [None]
        if self.labels is not None:
            return list(self.labels)
        if self._inferred is None:
            if not self._data_dir:
                raise UserError(
                    "generic task: labels unknown: pass labels=[...] or a data_dir holding "
                    f"{self.train_file} to infer them from"
                )
            path = readers.data_file(self._data_dir, self.train_file)
            self._inferred = _sort_labels({r[3] for r in self._read(path, need_label=True)})
        return list(self._inferred)

    # -- reading -----------------------------------------------------------------------------

    def _needs_inference(self) -> bool:
        return not self.is_regression and self.labels is None and self._inferred is None

    def _examples(self, path: str, records: list[_Record], set_type: str) -> list[InputExample]:
        examples = []
        for i, (line, text_a, text_b, raw) in enumerate(records):
            label = self.placeholder_label() if raw is None else self.check_label(raw, path, line)
            examples.append(InputExample(f"{set_type}-{i}", text_a, text_b, label))
        return examples

    def _read(self, path: str, need_label: bool) -> list[_Record]:
        if self.input_format == "jsonl":
            records = self._read_jsonl(path, need_label)
        else:
            records = self._read_delimited(path, need_label)
        if need_label:
            for line, _, _, raw in records:
                if raw == "":
                    raise UserError(f"{path}, line {line}: the label is empty")
        return records

    def _read_delimited(self, path: str, need_label: bool) -> list[_Record]:
        rows = readers.read_tsv(path) if self.input_format == "tsv" else readers.read_csv(path)
        header = rows[0].fields if self.has_header and rows else None
        data = rows[1:] if self.has_header else rows
        if not data:
            raise UserError(f"{path}: no data rows (empty file)")
        width = len(header) if header is not None else len(data[0].fields)
        a = self._index(self.text_a_column, header, width, path, "text_a_column")
        b = None
        if self.text_b_column not in (None, ""):
            b = self._index(self.text_b_column, header, width, path, "text_b_column")
        lab = self._index(self.label_column, header, width, path, "label_column") \
            if need_label else None
        sep = "tab" if self.input_format == "tsv" else "comma"
        records = []
        for row in data:
            f = row.fields
            if len(f) != width:
                raise UserError(
                    f"{path}, line {row.line}: expected {width} {sep}-separated columns, found "
                    f"{len(f)}"
                )
            records.append(
                (row.line, f[a], None if b is None else f[b], None if lab is None else f[lab])
            )
        return records

    def _index(
        self, spec: Column, header: list[str] | None, width: int, path: str, what: str
    ) -> int:
        """Resolves a column name or index against this file's header (or width)."""
        if header is not None and isinstance(spec, str) and spec in header:
            return header.index(spec)
        if isinstance(spec, int) and not isinstance(spec, bool):
            index = spec
        elif isinstance(spec, str) and spec.isdigit():
            index = int(spec)
        elif header is not None:
            raise UserError(
                f"{path}: {what} {spec!r} is not a column of the header; available columns: "
                f"{', '.join(header)}"
            )
        else:
            raise UserError(
                f"{path}: {what} {spec!r} is a name but the file has no header "
                "(has_header=False); give a 0-based column index"
            )
        if not 0 <= index < width:
            names = f" ({', '.join(header)})" if header is not None else ""
            raise UserError(
                f"{path}: {what} index {index} is out of range: the file has {width} "
                f"columns{names}, indices 0-{width - 1}"
            )
        return index

    def _read_jsonl(self, path: str, need_label: bool) -> list[_Record]:
        rows = readers.read_jsonl(path)
        if not rows:
            raise UserError(f"{path}: no data rows (empty file)")
        has_b = self.text_b_column not in (None, "")
        records = []
        for row in rows:
            text_a = self._json_text(row, self.text_a_column, path)
            text_b = self._json_text(row, self.text_b_column, path) if has_b else None
            label = None
            if need_label:
                label = self._json_label(row, path)
            records.append((row.line, text_a, text_b, label))
        return records

    @staticmethod
    def _json_value(row: readers.JsonRow, key: Column, path: str):
        key = str(key)
        if key not in row.obj:
            raise UserError(
                f"{path}, line {row.line}: no key {key!r}; keys on this line: "
                f"{', '.join(row.obj) or '(none)'}"
            )
        return key, row.obj[key]

    def _json_text(self, row: readers.JsonRow, column: Column, path: str) -> str:
        key, value = self._json_value(row, column, path)
        if not isinstance(value, str):
            raise UserError(
                f"{path}, line {row.line}: {key!r} must be a string, found {json.dumps(value)}"
            )
        return value

    def _json_label(self, row: readers.JsonRow, path: str) -> str:
        key, value = self._json_value(row, self.label_column, path)
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return json.dumps(value)  # "true"/"false", as written in the file
        if isinstance(value, int | float):
            return str(value)
        raise UserError(
            f"{path}, line {row.line}: label {key!r} must be a string or a number, found "
            f"{json.dumps(value)}"
        )

