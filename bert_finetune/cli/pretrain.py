"""bert-pretrain: the drop-in for Google's run_pretraining.py (masked LM + next sentence).

    bert-pretrain --input_file=out/tf_examples.tfrecord --output_dir=out/pretraining_output \
      --do_train=True --do_eval=True --bert_config_file=$BERT/bert_config.json \
      --init_checkpoint=$BERT/bert_model.ckpt --train_batch_size=32 --max_seq_length=128 \
      --max_predictions_per_seq=20 --num_train_steps=20 --num_warmup_steps=10 \
      --learning_rate=2e-5
"""

from __future__ import annotations

import dataclasses

from absl import flags

from bert_finetune import pretraining
from bert_finetune.cli import flags as common_flags
from bert_finetune.cli.common import run_main, run_task

FLAGS = flags.FLAGS
PROGRAM = "bert-pretrain"

flags.DEFINE_string("input_file", None,
                    "Input TF example files (can be a glob or comma separated).")
common_flags.define_model_flags()
flags.DEFINE_integer("max_predictions_per_seq", 20,
                     "Maximum number of masked LM predictions per sequence. "
                     "Must match data generation.")
flags.DEFINE_bool("do_train", False, "Whether to run training.")
flags.DEFINE_bool("do_eval", False, "Whether to run eval on the dev set.")
flags.DEFINE_integer("train_batch_size", 32, "Total batch size for training.")
flags.DEFINE_integer("eval_batch_size", 8, "Total batch size for eval.")
flags.DEFINE_float("learning_rate", 5e-5, "The initial learning rate for Adam.")
flags.DEFINE_integer("num_train_steps", 100000, "Number of training steps.")
flags.DEFINE_integer("num_warmup_steps", 10000, "Number of warmup steps.")
flags.DEFINE_integer("max_eval_steps", 100, "Maximum number of eval steps.")
common_flags.define_runner_flags()
flags.DEFINE_bool("use_one_hot_embeddings", None,
                  "One-hot matmul embedding lookups (default: on TPU only, as the original).")


def main(argv: list[str]) -> None:
    fields = [f.name for f in dataclasses.fields(pretraining.PretrainingOptions)]
    opts = pretraining.PretrainingOptions(**{n: FLAGS[n].value for n in fields if n in FLAGS})
    run_task(PROGRAM, opts, pretraining.validate, pretraining.run)


def run() -> None:
    """Console-script entry point."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
