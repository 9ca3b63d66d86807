"""bert-create-pretraining-data: the drop-in for Google's create_pretraining_data.py.

    bert-create-pretraining-data --input_file=./sample_text.txt \
      --output_file=/tmp/tf_examples.tfrecord --vocab_file=$BERT/vocab.txt \
      --do_lower_case=True --max_seq_length=128 --max_predictions_per_seq=20 \
      --masked_lm_prob=0.15 --random_seed=12345 --dupe_factor=5
"""

from __future__ import annotations

import dataclasses

from absl import flags

from bert_finetune import create_pretraining_data as task
from bert_finetune.cli.common import run_main, run_task

FLAGS = flags.FLAGS
PROGRAM = "bert-create-pretraining-data"

flags.DEFINE_string("input_file", None,
                    "Input raw text file (or comma-separated list of files; globs allowed).")
flags.DEFINE_string("output_file", None,
                    "Output TF example file (or comma-separated list of files).")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary file that the BERT model was trained on.")
flags.DEFINE_bool("do_lower_case", True,
                  "Whether to lower case the input text. Should be True for uncased "
                  "models and False for cased models.")
flags.DEFINE_bool("do_whole_word_mask", False,
                  "Whether to use whole word masking rather than per-WordPiece masking.")
flags.DEFINE_integer("max_seq_length", 128, "Maximum sequence length.")
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Maximum number of masked LM predictions per sequence.")
flags.DEFINE_integer("random_seed", 12345, "Random seed for data generation.")
flags.DEFINE_integer("dupe_factor", 10,
                     "Number of times to duplicate the input data (with different masks).")
flags.DEFINE_float("masked_lm_prob", 0.15, "Masked LM probability.")
flags.DEFINE_float("short_seq_prob", 0.1,
                   "Probability of creating sequences which are shorter than the maximum length.")
flags.DEFINE_integer("max_shard_tokens", task.CreatePretrainingDataOptions.max_shard_tokens,
                     "Bounds memory: documents are processed in shards of about this many "
                     "wordpieces (random next segments and the shuffle stay within a shard). "
                     "0 holds the whole corpus, as the original did.")


def main(argv: list[str]) -> None:
    fields = [f.name for f in dataclasses.fields(task.CreatePretrainingDataOptions)]
    opts = task.CreatePretrainingDataOptions(**{n: FLAGS[n].value for n in fields})
    run_task(PROGRAM, opts, task.validate, task.run)


def run() -> None:
    """Console-script entry point."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
