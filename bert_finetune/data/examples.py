"""`InputExample`, `PaddingInputExample` and the `DataProcessor` base, as in run_classifier.py.

A processor turns a task's files into `InputExample`s: `get_train_examples(data_dir)`,
`get_dev_examples(data_dir)`, `get_test_examples(data_dir)` and `get_labels()`. Labels are strings
(for regression tasks the score's text, e.g. `"3.800"`); test examples carry a placeholder label
(the task's first label, or `"0.0"` for regression) because the test files have none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bert_finetune.data import readers
from bert_finetune.errors import UserError

REGRESSION_PLACEHOLDER = "0.0"


@dataclass
class InputExample:
    """A single training/test example for simple sequence classification.

    guid: unique id, e.g. `"train-7"`. text_a: the untokenized first sequence. text_b: the second
    sequence of a pair task, else None. label: the label's string (None only where unknown).
    """

    guid: str
    text_a: str
    text_b: str | None = None
    label: str | None = None


class PaddingInputExample:
    """Fake example so that the number of examples is a multiple of the batch size.

    Eval/predict with a fixed batch size pads the last batch with these instead of dropping it;
    a dedicated class (not None) keeps padding from being mistaken for data.
    """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PaddingInputExample)

    def __hash__(self) -> int:
        return hash(PaddingInputExample)

    def __repr__(self) -> str:
        return "PaddingInputExample()"


class DataProcessor:
    """Base class for data converters for sequence classification data sets.

    `is_regression` is True for tasks whose label is a real number (STS-B); their `get_labels()`
    returns `[None]`.
    """

    is_regression: bool = False

    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        """Gets a collection of `InputExample`s for the train set."""
        raise NotImplementedError()

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        """Gets a collection of `InputExample`s for the dev set."""
        raise NotImplementedError()

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        """Gets a collection of `InputExample`s for prediction."""
        raise NotImplementedError()

    def get_labels(self) -> list:
        """Gets the list of labels for this data set."""
        raise NotImplementedError()

    @classmethod
    def _read_tsv(cls, input_file: str, quotechar: str | None = None) -> list[list[str]]:
        """Reads a tab separated value file: one list of fields per row (blank rows dropped)."""
        return [row.fields for row in readers.read_tsv(input_file, quotechar)]

    def placeholder_label(self) -> str:
        """The label given to test examples, whose files have none (as the original did)."""
        return REGRESSION_PLACEHOLDER if self.is_regression else self.get_labels()[0]

    def check_label(self, label: str, path: str, line: int) -> str:
        """Returns `label` if the task knows it, else raises a UserError naming file and line."""
        if self.is_regression:
            try:
                ok = math.isfinite(float(label))
            except ValueError:
                ok = False
            if not ok:
                raise UserError(f"{path}, line {line}: score {label!r} is not a finite number")
            return label
        labels = self.get_labels()
        if label not in labels:
            raise UserError(
                f"{path}, line {line}: label {label!r} is not one of the task's labels "
                f"{', '.join(repr(x) for x in labels)}"
            )
        return label
