"""bert-convert: turns a Hugging Face BERT directory into Google's checkpoint layout.

    bert-convert --hf_model_dir=DIR --output_dir=DIR

DIR holds config.json, model.safetensors, vocab.txt and optionally tokenizer_config.json; the
output holds bert_config.json, vocab.txt, do_lower_case.txt, bert_model.ckpt.* and checkpoint.
"""

from __future__ import annotations

import os

from absl import flags

from bert_finetune.cli import devices
from bert_finetune.cli.common import fail, run_main
from bert_finetune.convert import convert_hf_to_google

FLAGS = flags.FLAGS
PROGRAM = "bert-convert"

flags.DEFINE_string("hf_model_dir", None,
                    "Hugging Face BERT directory: config.json, model.safetensors, vocab.txt "
                    "(and optionally tokenizer_config.json).")
flags.DEFINE_string("output_dir", None,
                    "Where to write bert_config.json, vocab.txt, do_lower_case.txt and "
                    "bert_model.ckpt. Created if missing; files already there are replaced.")


def _flag_problems() -> list[str]:
    problems = []
    if not FLAGS.hf_model_dir:
        problems.append("--hf_model_dir is required")
    elif not os.path.isdir(FLAGS.hf_model_dir):
        problems.append(f"--hf_model_dir={FLAGS.hf_model_dir}: directory not found")
    if not FLAGS.output_dir:
        problems.append("--output_dir is required")
    return problems


def main(argv: list[str]) -> None:
    problems = _flag_problems()
    if problems:
        fail(PROGRAM, "; ".join(problems))
    devices.probe_devices()  # before TensorFlow starts: no CUDA error lines on a CPU machine
    summary = convert_hf_to_google(FLAGS.hf_model_dir, FLAGS.output_dir)  # UserError: run_main
    print(f"bert-convert: wrote {summary['num_variables']} variables "
          f"(hidden_act {summary['hidden_act']}) to {summary['init_checkpoint']}")


def run() -> None:
    """Console-script entry point (`bert-convert`)."""
    run_main(PROGRAM, main)


if __name__ == "__main__":
    run()
