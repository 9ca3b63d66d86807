"""bert-freeze: a trained Keras model or a fine-tuned run -> one frozen GraphDef (.pb).

    bert-freeze --keras_model=/tmp/keras_mrpc/saved_model --output_file=/tmp/mrpc.pb
    bert-freeze --run_dir=/tmp/mrpc_output --output_file=/tmp/mrpc.pb

The graph takes `text:0` (string [B], "a ||| b" for pairs; tokenized inside the graph) and gives
`probabilities:0` (and `logits:0` for a run); `<output_file>.json` lists the names. Importing it
needs `import tensorflow_text`. See bert_finetune/export/freeze.py.
"""

from __future__ import annotations

from absl import flags

from bert_finetune.cli.common import fail, run_main

FLAGS = flags.FLAGS
PROGRAM = "bert-freeze"

flags.DEFINE_string("keras_model", None,
                    "A saved tf_keras model on strings (SavedModel directory, .keras or .h5), "
                    "e.g. Input(string) -> BertLayer -> Dense.")
flags.DEFINE_string("run_dir", None, "A fine-tuned bert-classify output_dir.")
flags.DEFINE_string("output_file", None, "The frozen graph to write (.pb).")


def main(argv: list[str]) -> None:
    from bert_finetune.export import freeze

    problems = []
    if bool(FLAGS.keras_model) == bool(FLAGS.run_dir):
        problems.append("give exactly one of --keras_model and --run_dir")
    if not FLAGS.output_file:
        problems.append("--output_file is required")
    if problems:
        fail(PROGRAM, " | ".join(problems))
    if FLAGS.keras_model:
        description = freeze.freeze_keras_model(freeze.load_keras_model(FLAGS.keras_model),
                                                FLAGS.output_file)
    else:
        description = freeze.freeze_run_dir(FLAGS.run_dir, FLAGS.output_file)
    print(f"{PROGRAM}: wrote {FLAGS.output_file}: inputs {description['inputs']}, "
          f"outputs {description['outputs']}")


def run() -> None:
    """Console-script entry point (`bert-freeze`)."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
