"""The GLUE and XNLI processors of run_classifier.py, plus the rest of GLUE, and `PROCESSORS`.

XNLI, MNLI, MRPC and CoLA read their files exactly as the original did (same columns, same guids);
SST-2, STS-B, QQP, QNLI, RTE and WNLI follow the standard GLUE layouts (as Hugging Face's GLUE
processors read them). Each split is described by a `Layout` (which columns hold the texts, the
label and the id) instead of one hand-written loop per task.

Checks: a file with no data rows, a row whose column count differs from the header's (or from the
fixed count of a header-less file) and a label the task does not know are `UserError`s naming the
file and line. QQP alone skips wrong-length rows (GLUE's QQP has records broken by embedded
newlines), logging each with its file and line and counting them in `skipped_rows`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bert_finetune.data import readers
from bert_finetune.data.examples import DataProcessor, InputExample
from bert_finetune.data.generic import GenericProcessor
from bert_finetune.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where a split's fields are: 0-based column indices (negative ones count from the end).

    label=None marks a test split: its examples get the placeholder label. columns=None means
    "as many columns as the header"; header-less files must give the count. guid=None names
    examples `<set_type>-<i>` with i the row's index in the file (header included, as in the
    original), otherwise `<set_type>-<value of that column>`.
    """

    text_a: int
    text_b: int | None = None
    label: int | None = None
    header: bool = True
    columns: int | None = None
    guid: int | None = None

    def __post_init__(self):
        if not self.header and self.columns is None:
            raise ValueError("a header-less layout needs an explicit column count")

    def min_columns(self) -> int:
        """The fewest columns a row may have for every index of this layout to exist."""
        used = [c for c in (self.text_a, self.text_b, self.label, self.guid) if c is not None]
        return max(c + 1 if c >= 0 else -c for c in used)


@dataclass(frozen=True)
class Split:
    """One split of a task: its file (relative to data_dir), guid prefix and layout."""

    file: str
    set_type: str
    layout: Layout


class TsvTaskProcessor(DataProcessor):
    """A task made of tab-separated files, read with `_read_tsv`'s rules (`csv.QUOTE_NONE`)."""

    name: str = ""
    labels: tuple[str, ...] = ()
    train: Split
    dev: Split
    test: Split

    def __init__(self):
        # Rows skipped as malformed, per file path (only tasks that skip, i.e. QQP, add to it).
        self.skipped_rows: dict[str, int] = {}

    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        return self._read_split(data_dir, self.train)

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        return self._read_split(data_dir, self.dev)

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        return self._read_split(data_dir, self.test)

    def get_labels(self) -> list:
        """See base class."""
        return list(self.labels)

    def _read_split(self, data_dir: str, split: Split) -> list[InputExample]:
        path = readers.data_file(data_dir, split.file)
        return self._create_examples(path, readers.read_tsv(path), split)

    def _keep(self, split: Split, fields: list[str]) -> bool:
        """Whether a well-formed row belongs to the examples (XNLI filters by language)."""
        return True

    def _map_label(self, label: str) -> str:
        return label

    def _bad_row(self, path: str, row: readers.Row, expected: int) -> None:
        """Reacts to a row with the wrong number of columns: an error, unless a task skips it."""
        raise UserError(
            f"{path}, line {row.line}: expected {expected} tab-separated columns, found "
            f"{len(row.fields)}"
        )

    def _create_examples(
        self, path: str, rows: list[readers.Row], split: Split
    ) -> list[InputExample]:
        layout = split.layout
        needed = layout.min_columns()
        first_data = 1 if layout.header else 0
        if len(rows) <= first_data:
            raise UserError(f"{path}: no data rows (empty file)")
        if layout.header:
            header = rows[0]
            expected = layout.columns or len(header.fields)
            if len(header.fields) < needed:
                raise UserError(
                    f"{path}, line {header.line}: the header has {len(header.fields)} columns, "
                    f"the {self.name} {split.set_type} layout needs at least {needed}"
                )
        else:
            expected = layout.columns
        examples = []
        for i, row in enumerate(rows):
            if i < first_data:
                continue
            fields = row.fields
            if len(fields) != expected:
                self._bad_row(path, row, expected)
                continue
            if not self._keep(split, fields):
                continue
            guid_value = i if layout.guid is None else fields[layout.guid]
            if layout.label is None:
                label = self.placeholder_label()
            else:
                label = self.check_label(self._map_label(fields[layout.label]), path, row.line)
            text_b = None if layout.text_b is None else fields[layout.text_b]
            examples.append(
                InputExample(
                    guid=f"{split.set_type}-{guid_value}",
                    text_a=fields[layout.text_a],
                    text_b=text_b,
                    label=label,
                )
            )
        return examples


_NLI = ("contradiction", "entailment", "neutral")
_BINARY = ("0", "1")
_RTE = ("entailment", "not_entailment")


class XnliProcessor(TsvTaskProcessor):
    """Processor for the XNLI data set (one language; the original hard-coded "zh").

    Train reads `multinli/multinli.train.<language>.tsv` (premise, hypo, label; "contradictory"
    becomes "contradiction"); dev and test read `xnli.dev.tsv` / `xnli.test.tsv` (language,
    gold_label, ..., sentence1 at column 6, sentence2 at 7), keeping the rows of `language`.
    The original had no test split; here the test file's gold labels are kept (it has them).
    """

    name = "xnli"
    labels = _NLI

    def __init__(self, language: str = "zh"):
        super().__init__()
        self.language = language
        self.train = Split(
            f"multinli/multinli.train.{language}.tsv", "train", Layout(text_a=0, text_b=1, label=2)
        )
        self.dev = Split("xnli.dev.tsv", "dev", Layout(text_a=6, text_b=7, label=1))
        self.test = Split("xnli.test.tsv", "test", Layout(text_a=6, text_b=7, label=1))

    def _map_label(self, label: str) -> str:
        # The machine-translated train files spell it "contradictory".
        return "contradiction" if label == "contradictory" else label

    def _keep(self, split: Split, fields: list[str]) -> bool:
        # xnli.{dev,test}.tsv hold all 15 languages; the train file is one language already.
        return split is self.train or fields[0] == self.language

    def _read_split(self, data_dir: str, split: Split) -> list[InputExample]:
        path = readers.data_file(data_dir, split.file)
        rows = readers.read_tsv(path)
        examples = self._create_examples(path, rows, split)
        if not examples:
            found = sorted({r.fields[0] for r in rows[1:] if r.fields})
            raise UserError(
                f"{path}: no rows for language {self.language!r} (found: {', '.join(found)})"
            )
        return examples


class MnliProcessor(TsvTaskProcessor):
    """Processor for the MultiNLI data set (GLUE version), matched dev/test sets."""

    name = "mnli"
    labels = _NLI
    train = Split("train.tsv", "train", Layout(text_a=8, text_b=9, label=-1, guid=0))
    dev = Split("dev_matched.tsv", "dev_matched", Layout(text_a=8, text_b=9, label=-1, guid=0))
    test = Split("test_matched.tsv", "test", Layout(text_a=8, text_b=9, guid=0))


class MnliMismatchedProcessor(MnliProcessor):
    """Processor for the MultiNLI data set (GLUE version), mismatched dev/test sets."""

    name = "mnli-mm"
    dev = Split(
        "dev_mismatched.tsv", "dev_mismatched", Layout(text_a=8, text_b=9, label=-1, guid=0)
    )
    test = Split("test_mismatched.tsv", "test_mismatched", Layout(text_a=8, text_b=9, guid=0))


class MrpcProcessor(TsvTaskProcessor):
    """Processor for the MRPC data set (GLUE version): Quality, #1 ID, #2 ID, #1/#2 String."""

    name = "mrpc"
    labels = _BINARY
    train = Split("train.tsv", "train", Layout(text_a=3, text_b=4, label=0))
    dev = Split("dev.tsv", "dev", Layout(text_a=3, text_b=4, label=0))
    test = Split("test.tsv", "test", Layout(text_a=3, text_b=4))


class ColaProcessor(TsvTaskProcessor):
    """Processor for the CoLA data set (GLUE version); only the test file has a header."""

    name = "cola"
    labels = _BINARY
    train = Split("train.tsv", "train", Layout(text_a=3, label=1, header=False, columns=4))
    dev = Split("dev.tsv", "dev", Layout(text_a=3, label=1, header=False, columns=4))
    test = Split("test.tsv", "test", Layout(text_a=1))


class Sst2Processor(TsvTaskProcessor):
    """Processor for SST-2 (GLUE version): sentence, label; test: index, sentence."""

    name = "sst-2"
    labels = _BINARY
    train = Split("train.tsv", "train", Layout(text_a=0, label=1))
    dev = Split("dev.tsv", "dev", Layout(text_a=0, label=1))
    test = Split("test.tsv", "test", Layout(text_a=1))


class StsbProcessor(TsvTaskProcessor):
    """Processor for STS-B (GLUE version), a regression task: sentence1/2 at 7/8, score at 9."""

    name = "sts-b"
    is_regression = True
    train = Split("train.tsv", "train", Layout(text_a=7, text_b=8, label=-1, guid=0))
    dev = Split("dev.tsv", "dev", Layout(text_a=7, text_b=8, label=-1, guid=0))
    test = Split("test.tsv", "test", Layout(text_a=7, text_b=8, guid=0))

    def get_labels(self) -> list:
        """See base class: a regression task has no label set."""
        return [None]


class QqpProcessor(TsvTaskProcessor):
    """Processor for QQP (GLUE version): id qid1 qid2 question1 question2 is_duplicate.

    GLUE's QQP train file has records broken by embedded newlines, which leave rows with too few
    fields; like Hugging Face's processor, those rows are skipped (each logged, all counted in
    `skipped_rows[path]`) instead of stopping a multi-hour run.
    """

    name = "qqp"
    labels = _BINARY
    train = Split("train.tsv", "train", Layout(text_a=3, text_b=4, label=5, guid=0))
    dev = Split("dev.tsv", "dev", Layout(text_a=3, text_b=4, label=5, guid=0))
    test = Split("test.tsv", "test", Layout(text_a=1, text_b=2, guid=0))

    def _create_examples(
        self, path: str, rows: list[readers.Row], split: Split
    ) -> list[InputExample]:
        self.skipped_rows[path] = 0
        examples = super()._create_examples(path, rows, split)
        if self.skipped_rows[path]:
            logger.warning(
                "%s: skipped %d malformed rows, kept %d examples",
                path, self.skipped_rows[path], len(examples),
            )
        return examples

    def _bad_row(self, path: str, row: readers.Row, expected: int) -> None:
        self.skipped_rows[path] += 1
        logger.warning(
            "%s, line %d: skipping a malformed row (%d columns instead of %d)",
            path, row.line, len(row.fields), expected,
        )


class QnliProcessor(TsvTaskProcessor):
    """Processor for QNLI (GLUE version): index, question, sentence, label."""

    name = "qnli"
    labels = _RTE
    train = Split("train.tsv", "train", Layout(text_a=1, text_b=2, label=-1, guid=0))
    dev = Split("dev.tsv", "dev", Layout(text_a=1, text_b=2, label=-1, guid=0))
    test = Split("test.tsv", "test", Layout(text_a=1, text_b=2, guid=0))


class RteProcessor(QnliProcessor):
    """Processor for RTE (GLUE version): index, sentence1, sentence2, label."""

    name = "rte"


class WnliProcessor(QnliProcessor):
    """Processor for WNLI (GLUE version): index, sentence1, sentence2, label ("0"/"1")."""

    name = "wnli"
    labels = _BINARY


PROCESSORS: dict[str, type[DataProcessor]] = {
    "cola": ColaProcessor,
    "mnli": MnliProcessor,
    "mnli-mm": MnliMismatchedProcessor,
    "mrpc": MrpcProcessor,
    "xnli": XnliProcessor,
    "sst-2": Sst2Processor,
    "qqp": QqpProcessor,
    "qnli": QnliProcessor,
    "rte": RteProcessor,
    "wnli": WnliProcessor,
    "sts-b": StsbProcessor,
    "generic": GenericProcessor,
}


def get_processor(task_name: str, **kwargs) -> DataProcessor:
    """Builds the processor of `task_name` (case-insensitive); kwargs go to its constructor."""
    key = task_name.lower()
    if key not in PROCESSORS:
        raise UserError(f"Task not found: {task_name!r}; valid tasks: {', '.join(PROCESSORS)}")
    try:
        return PROCESSORS[key](**kwargs)
    except TypeError as e:
        raise UserError(f"task {task_name!r}: bad processor arguments: {e}") from None
