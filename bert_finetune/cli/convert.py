"""bert-convert: turns a Hugging Face BERT directory into Google's checkpoint layout.

    bert-convert --hf_model_dir=DIR --output_dir=DIR

DIR holds config.json, model.safetensors, vocab.txt and optionally tokenizer_config.json; the
output holds bert_config.json, vocab.txt, do_lower_case.txt, bert_model.ckpt.* and checkpoint.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from absl import app, flags

from bert_finetune.convert import convert_hf_to_google
from bert_finetune.errors import UserError

FLAGS = flags.FLAGS

flags.DEFINE_string("hf_model_dir", None,
                    "Hugging Face BERT directory: config.json, model.safetensors, vocab.txt "
                    "(and optionally tokenizer_config.json).")
flags.DEFINE_string("output_dir", None,
                    "Where to write bert_config.json, vocab.txt, do_lower_case.txt and "
                    "bert_model.ckpt. Created if missing; files already there are replaced.")


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"bert-convert: error: {' '.join(message.split())}\n")
    sys.exit(1)


def _flag_problems(argv: list[str]) -> list[str]:
    problems = []
    if len(argv) > 1:
        problems.append(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.hf_model_dir:
        problems.append("--hf_model_dir is required")
    elif not os.path.isdir(FLAGS.hf_model_dir):
        problems.append(f"--hf_model_dir={FLAGS.hf_model_dir}: directory not found")
    if not FLAGS.output_dir:
        problems.append("--output_dir is required")
    return problems


def main(argv: list[str]) -> None:
    problems = _flag_problems(argv)
    if problems:
        _fail("; ".join(problems))
    try:
        summary = convert_hf_to_google(FLAGS.hf_model_dir, FLAGS.output_dir)
    except UserError as e:
        _fail(str(e))
    print(f"bert-convert: wrote {summary['num_variables']} variables "
          f"(hidden_act {summary['hidden_act']}) to {summary['init_checkpoint']}")


def _parse_flags(argv: list[str]) -> list[str]:
    # absl's own parser prints two lines for a bad flag; keep to the one-line error contract.
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(str(e))


def run() -> None:
    """Console-script entry point (`bert-convert`)."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
