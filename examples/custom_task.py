"""A task of your own with bert-classify's flags: a two-label sentiment TSV (examples/data/).

    python examples/custom_task.py --task_name=my_sentiment --do_train=true --do_eval=true \
      --data_dir=examples/data --vocab_file=$BERT/vocab.txt \
      --bert_config_file=$BERT/bert_config.json --init_checkpoint=$BERT/bert_model.ckpt \
      --max_seq_length=32 --train_batch_size=8 --num_train_epochs=3 --output_dir=/tmp/my_sentiment

Files: train.tsv and dev.tsv hold `sentence<TAB>label` (label `negative` or `positive`),
test.tsv holds `id<TAB>sentence`; each starts with a header row. Everything else (features,
model, training, eval_results.txt, test_results.tsv) is bert-classify's, unchanged.
"""

from __future__ import annotations

from bert_finetune.cli.classify import run
from bert_finetune.data import readers
from bert_finetune.data.examples import DataProcessor, InputExample
from bert_finetune.data.glue import PROCESSORS
from bert_finetune.errors import UserError


class MySentimentProcessor(DataProcessor):
    """Processor for examples/data: single sentences labelled negative / positive."""

    def get_train_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        return self._create_examples(data_dir, "train")

    def get_dev_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        return self._create_examples(data_dir, "dev")

    def get_test_examples(self, data_dir: str) -> list[InputExample]:
        """See base class."""
        return self._create_examples(data_dir, "test")

    def get_labels(self) -> list[str]:
        """See base class. The order fixes the label ids (negative = 0, positive = 1)."""
        return ["negative", "positive"]

    def _create_examples(self, data_dir: str, set_type: str) -> list[InputExample]:
        # readers.data_file / read_tsv turn a missing file or bad bytes into a one-line error;
        # each row keeps its line number so that our own checks can name it too.
        path = readers.data_file(data_dir, f"{set_type}.tsv")
        examples = []
        for i, row in enumerate(readers.read_tsv(path)[1:]):  # [1:]: skip the header
            if len(row.fields) != 2:
                raise UserError(f"{path}, line {row.line}: expected 2 tab-separated columns, "
                                f"found {len(row.fields)}")
            if set_type == "test":  # test rows are `id, sentence` and carry no label
                guid, text = f"test-{row.fields[0]}", row.fields[1]
                label = self.placeholder_label()
            else:
                guid, text = f"{set_type}-{i}", row.fields[0]
                label = self.check_label(row.fields[1], path, row.line)  # unknown label: error
            examples.append(InputExample(guid=guid, text_a=text, text_b=None, label=label))
        if not examples:
            raise UserError(f"{path}: no data rows")
        return examples


if __name__ == "__main__":
    # The GLUE tasks stay available next to the new one.
    run(processors={**PROCESSORS, "my_sentiment": MySentimentProcessor})
