"""bert-extract-features: the drop-in for Google's extract_features.py.

    bert-extract-features --input_file=input.txt --output_file=output.jsonl \
      --vocab_file=$BERT/vocab.txt --bert_config_file=$BERT/bert_config.json \
      --init_checkpoint=$BERT/bert_model.ckpt --layers=-1,-2,-3,-4 --max_seq_length=128 \
      --batch_size=8

One sentence, or `text_a ||| text_b`, per line of input.txt; one JSON line per input line.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from bert_finetune import extract_features as task
from bert_finetune.cli.common import run_main, run_task

FLAGS = flags.FLAGS
PROGRAM = "bert-extract-features"

flags.DEFINE_string("input_file", None, "One sentence, or 'text_a ||| text_b', per line.")
flags.DEFINE_string("output_file", None, "Where to write the features (JSONL or .npy).")
flags.DEFINE_string("layers", "-1,-2,-3,-4", "Comma-separated encoder layers to output.")
flags.DEFINE_string("bert_config_file", None,
                    "The config json file corresponding to the pre-trained BERT model. "
                    "This specifies the model architecture.")
flags.DEFINE_integer("max_seq_length", 128,
                     "The maximum total input sequence length after WordPiece tokenization. "
                     "Sequences longer than this will be truncated, and sequences shorter "
                     "than this will be padded.")
flags.DEFINE_string("init_checkpoint", None,
                    "Initial checkpoint (usually from a pre-trained BERT model): a prefix or a "
                    "directory (its latest checkpoint).")
flags.DEFINE_string("vocab_file", None,
                    "The vocabulary file that the BERT model was trained on.")
flags.DEFINE_bool("do_lower_case", True,
                  "Whether to lower case the input text. Should be True for uncased "
                  "models and False for cased models.")
flags.DEFINE_integer("batch_size", 32, "Batch size for predictions.")
flags.DEFINE_bool("use_tpu", False, "Whether to use TPU or GPU/CPU.")
flags.DEFINE_string("master", None, "If using a TPU, the address of the master.")
flags.DEFINE_integer("num_tpu_cores", 8,
                     "Only used if `use_tpu` is True. Total number of TPU cores to use.")
flags.DEFINE_bool("use_one_hot_embeddings", False,
                  "If True, tf.one_hot will be used for embedding lookups, otherwise "
                  "tf.nn.embedding_lookup will be used. On TPUs, this should be True since it "
                  "is much faster.")
# Additions.
flags.DEFINE_enum("pooling", "none", list(task.POOLINGS),
                  "none: every token's vectors (the original output); cls: the [CLS] vector; "
                  "mean: the mean over real tokens (padding excluded). cls/mean write one "
                  "vector per layer and line.")
flags.DEFINE_enum("output_format", "jsonl", list(task.OUTPUT_FORMATS),
                  "jsonl: the original's JSON lines; npy: a float32 array [lines, layers, H] "
                  "(needs --pooling=cls or mean).")
flags.DEFINE_string("tpu_name", None, "The Cloud TPU to use.")
flags.DEFINE_enum("distribution_strategy", "auto",
                  ["auto", "default", "mirrored", "multi_worker", "tpu"],
                  "auto: TPU if --use_tpu, Mirrored if several GPUs, else the default strategy.")


def main(argv: list[str]) -> None:
    fields = [f.name for f in dataclasses.fields(task.ExtractFeaturesOptions)]
    opts = task.ExtractFeaturesOptions(**{n: FLAGS[n].value for n in fields})
    run_task(PROGRAM, opts, task.validate, task.run)


def run() -> None:
    """Console-script entry point."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
