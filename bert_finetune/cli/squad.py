"""bert-squad: the drop-in for Google's run_squad.py (same flags, same output files).

    bert-squad --vocab_file=$BERT/vocab.txt --bert_config_file=$BERT/bert_config.json \
      --init_checkpoint=$BERT/bert_model.ckpt --do_train=true --train_file=$SQUAD/train-v1.1.json \
      --do_predict=true --predict_file=$SQUAD/dev-v1.1.json --train_batch_size=12 \
      --learning_rate=3e-5 --num_train_epochs=2.0 --max_seq_length=384 --doc_stride=128 \
      --output_dir=/tmp/squad_base/

SQuAD 2.0: add --version_2_with_negative=true. When the predict file has answers, the official
EM/F1 land in eval_results.txt (v2.0: with the best null threshold).
"""

from __future__ import annotations

from absl import flags

from bert_finetune import squad
from bert_finetune.cli import flags as common_flags
from bert_finetune.cli.common import fail, run_main

FLAGS = flags.FLAGS
PROGRAM = "bert-squad"

common_flags.define_model_flags(max_seq_length=384)
flags.DEFINE_string("train_file", None,
                    "SQuAD json for training. E.g., train-v1.1.json")
flags.DEFINE_string(
    "predict_file", None,
    "SQuAD json for predictions. E.g., dev-v1.1.json or test-v1.1.json")
flags.DEFINE_integer(
    "doc_stride", 128,
    "When splitting up a long document into chunks, how much stride to take between chunks.")
flags.DEFINE_integer(
    "max_query_length", 64,
    "The maximum number of tokens for the question. Questions longer than this will be "
    "truncated to this length.")
flags.DEFINE_bool("do_train", False, "Whether to run training.")
flags.DEFINE_bool("do_predict", False, "Whether to run eval on the dev set.")
flags.DEFINE_integer("train_batch_size", 32, "Total batch size for training.")
flags.DEFINE_integer("predict_batch_size", 8, "Total batch size for predictions.")
flags.DEFINE_float("learning_rate", 5e-5, "The initial learning rate for Adam.")
flags.DEFINE_float("num_train_epochs", 3.0, "Total number of training epochs to perform.")
flags.DEFINE_float(
    "warmup_proportion", 0.1,
    "Proportion of training to perform linear learning rate warmup for. "
    "E.g., 0.1 = 10% of training.")
flags.DEFINE_integer(
    "n_best_size", 20,
    "The total number of n-best predictions to generate in the nbest_predictions.json "
    "output file.")
flags.DEFINE_integer(
    "max_answer_length", 30,
    "The maximum length of an answer that can be generated. This is needed because the start "
    "and end predictions are not conditioned on one another.")
common_flags.define_runner_flags()
flags.DEFINE_bool(
    "verbose_logging", False,
    "If true, all of the warnings related to data processing will be printed. "
    "A number of warnings are expected for a normal SQuAD evaluation.")
flags.DEFINE_bool(
    "version_2_with_negative", False,
    "If true, the SQuAD examples contain some that do not have an answer.")
flags.DEFINE_float(
    "null_score_diff_threshold", 0.0,
    "If null_score - best_non_null is greater than the threshold predict null.")

# What a predict-only run takes from the recorded training run when not given again.
_RECORDED = ("do_lower_case", "max_seq_length", "doc_stride", "max_query_length",
             "version_2_with_negative")


def _options() -> squad.SquadOptions:
    """SquadOptions from the flags, completed from a recorded run in output_dir."""
    return common_flags.options_from_flags(squad.SquadOptions, _RECORDED)[0]


def main(argv: list[str]) -> None:
    opts = _options()
    problems = squad.validate(opts)
    if problems:
        fail(PROGRAM, " | ".join(problems) if len(problems) > 1 else problems[0])
    squad.run(opts)


def run() -> None:
    """Console-script entry point."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
