"""bert-export: a BERT checkpoint -> a self-contained SavedModel module (TF Hub's reusable format).

    bert-export --bert_config_file=$BERT/bert_config.json --vocab_file=$BERT/vocab.txt \
      --init_checkpoint=$BERT/bert_model.ckpt --export_dir=/tmp/bert_module

    # a fine-tuned run: config, vocab and casing come from its output_dir
    bert-export --init_checkpoint=/tmp/mrpc_output --export_dir=/tmp/mrpc_module

    # for serving (TF Serving's versioned layout, raw strings in)
    bert-export --classifier --run_dir=/tmp/mrpc_output --output_dir=/tmp/mrpc_export
    bert-export --squad --run_dir=/tmp/squad_output --output_dir=/tmp/squad_export

The module loads with `hub.load` / `hub.KerasLayer(..., trainable=True)` and feeds
`bert-classify --bert_hub_module_handle`; see bert_finetune/export/module.py for its layout.
"""

from __future__ import annotations

import os

from absl import flags

from bert_finetune.cli import flags as common_flags
from bert_finetune.cli.common import fail, run_main
from bert_finetune.errors import UserError

FLAGS = flags.FLAGS
PROGRAM = "bert-export"

flags.DEFINE_string("bert_config_file", None,
                    "bert_config.json of the model (default: the one in --init_checkpoint's "
                    "directory, e.g. a fine-tuned run's output_dir).")
flags.DEFINE_string("vocab_file", None,
                    "vocab.txt of the model (default: the one in --init_checkpoint's directory).")
flags.DEFINE_string("init_checkpoint", None,
                    "Checkpoint prefix (.../bert_model.ckpt, .../model.ckpt-N) or a directory "
                    "(its latest checkpoint, e.g. a fine-tuned run's output_dir).")
flags.DEFINE_bool("do_lower_case", True,
                  "Casing recorded in the module's tokenization_info (default: the "
                  "do_lower_case.txt beside the checkpoint or vocab, else true).")
flags.DEFINE_string("export_dir", None,
                    "Where to write the module (replaced if it exists).")
flags.DEFINE_bool("all_encoder_layers", False,
                  "Also output all_encoder_layers [L, B, T, H] (every layer's sequence output).")
flags.DEFINE_bool("with_preprocessor", True,
                  "Also write export_dir/preprocessor/: raw text -> input_ids/input_mask/"
                  "segment_ids in the graph (needs tensorflow-text to load).")
flags.DEFINE_integer("max_seq_length", 128,
                     "Sequence length T of the preprocessor's outputs.")


# -- --classifier: a fine-tuned bert-classify run -> a servable model (export/classifier.py) ------
flags.DEFINE_bool("classifier", False,
                  "Export a fine-tuned classifier from --run_dir (a bert-classify output_dir) "
                  "for serving, instead of a hub module.")
flags.DEFINE_string("run_dir", None,
                    "--classifier / --squad: the bert-classify / bert-squad output_dir to export.")
flags.DEFINE_string("output_dir", None,
                    "--classifier / --squad: where to write. saved_model: TF Serving's model "
                    "base path (the export goes to output_dir/<model_version>/).")
flags.DEFINE_enum("format", "saved_model", ["saved_model", "onnx", "tflite"],
                  "--classifier: saved_model (raw strings in, TF Serving), onnx (ids in, via "
                  "tf2onnx; pip install 'bert_finetune[onnx]') or tflite (ids in).")
flags.DEFINE_enum("quantize", "none", ["none", "int8"],
                  "--format=tflite: int8 = dynamic-range quantization (int8 weights).")
flags.DEFINE_bool("overwrite", False,
                  "--classifier / --squad: replace a non-empty --output_dir (saved_model: the "
                  "version written).")
flags.DEFINE_integer("model_version", None,
                     "--format=saved_model: the version directory (default 1 in a new "
                     "--output_dir); a new number adds a version beside the others.")
flags.DEFINE_bool("sentence_pair", None,
                  "--classifier: whether the model takes text_b (default: from the run's task; "
                  "required for a task of your own).")


def export_classifier_main() -> None:
    from bert_finetune.export import classifier

    problems = [f"--{n} is required with --classifier" for n in ("run_dir", "output_dir")
                if not FLAGS[n].value]
    if problems:
        fail(PROGRAM, " | ".join(problems))
    path = classifier.export_classifier(
        FLAGS.run_dir, FLAGS.output_dir, FLAGS.format, FLAGS.quantize, FLAGS.overwrite,
        FLAGS.model_version, FLAGS.sentence_pair)
    print(f"{PROGRAM}: wrote {FLAGS.format} of {FLAGS.run_dir} to {path}")


# -- --squad: a fine-tuned bert-squad run -> a servable SavedModel (export/squad_serving.py) -------
flags.DEFINE_bool("squad", False,
                  "Export a fine-tuned bert-squad model from --run_dir (its output_dir) as a "
                  "SavedModel: question + context strings in, answer text, score and character "
                  "offsets out (one window of the run's max_seq_length; see the README).")


def export_squad_main() -> None:
    from bert_finetune.export import squad_serving

    problems = [f"--{n} is required with --squad" for n in ("run_dir", "output_dir")
                if not FLAGS[n].value]
    if FLAGS.classifier:
        problems.append("give --classifier or --squad, not both")
    if FLAGS.format != "saved_model":
        problems.append(f"--format={FLAGS.format}: --squad exports --format=saved_model only "
                        "(tokenization and answer selection live in the graph)")
    if FLAGS.quantize != "none":
        problems.append(f"--quantize={FLAGS.quantize} applies to --format=tflite only")
    if FLAGS.sentence_pair is not None:
        problems.append("--sentence_pair applies to --classifier only")
    if problems:
        fail(PROGRAM, " | ".join(problems))
    path = squad_serving.export_squad(FLAGS.run_dir, FLAGS.output_dir, FLAGS.overwrite,
                                      FLAGS.model_version)
    print(f"{PROGRAM}: wrote saved_model of {FLAGS.run_dir} to {path}")


def _from_checkpoint_dir(name: str, file_name: str) -> str | None:
    """The flag's value, else `file_name` in --init_checkpoint's directory if it is there."""
    value = FLAGS[name].value
    if value or not FLAGS.init_checkpoint:
        return value
    ckpt = FLAGS.init_checkpoint
    directory = ckpt if os.path.isdir(ckpt) else os.path.dirname(ckpt)
    candidate = os.path.join(directory, file_name)
    return candidate if os.path.isfile(candidate) else None


def _module_problems(config: str | None, vocab: str | None) -> list[str]:
    problems = []
    if not FLAGS.init_checkpoint:
        problems.append("--init_checkpoint is required")
    if not config:
        problems.append("--bert_config_file is required (no bert_config.json beside the "
                        "checkpoint)")
    if not vocab:
        problems.append("--vocab_file is required (no vocab.txt beside the checkpoint)")
    if not FLAGS.export_dir:
        problems.append("--export_dir is required")
    if FLAGS.max_seq_length < 3:
        problems.append(f"--max_seq_length={FLAGS.max_seq_length} leaves no room for text "
                        "([CLS] and [SEP] take 2)")
    return problems


def export_module_main() -> None:
    from bert_finetune.export import module

    config = _from_checkpoint_dir("bert_config_file", "bert_config.json")
    vocab = _from_checkpoint_dir("vocab_file", "vocab.txt")
    problems = _module_problems(config, vocab)
    if problems:
        fail(PROGRAM, " | ".join(problems))
    lower = FLAGS.do_lower_case if common_flags.explicitly_set("do_lower_case") else None
    summary = module.export_module(
        config, vocab, FLAGS.init_checkpoint, FLAGS.export_dir, do_lower_case=lower,
        all_layers=FLAGS.all_encoder_layers, max_seq_length=FLAGS.max_seq_length,
        with_preprocessor=FLAGS.with_preprocessor)
    print(f"{PROGRAM}: wrote a module with {summary['num_variables']} variables "
          f"(do_lower_case={summary['do_lower_case']}) to {summary['export_dir']}")


def main(argv: list[str]) -> None:
    try:
        if FLAGS.squad:
            export_squad_main()
        elif FLAGS.classifier:
            export_classifier_main()
        else:
            export_module_main()
    except ImportError as e:
        raise UserError(f"missing dependency: {e}") from None


def run() -> None:
    """Console-script entry point (`bert-export`)."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
