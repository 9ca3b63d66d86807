"""TensorFlow's `saved_model_cli`, with the in-graph tokenizer's ops registered first.

A `bert-export --classifier` SavedModel tokenizes with tensorflow_text ops, which a plain
`saved_model_cli run` does not load ("Op type not registered 'NormalizeUTF8'"):

    python -m bert_finetune.cli.saved_model_cli run --dir EXPORT/1 --tag_set serve \
      --signature_def serving_default --input_exprs 'text_a=["He said so."];text_b=["So he said."]'

(`show` needs no ops and works with either.)
"""

from __future__ import annotations


def run() -> None:
    import tensorflow_text  # noqa: F401  (registers the ops the graph uses)
    from tensorflow.python.tools import saved_model_cli

    saved_model_cli.main()


if __name__ == "__main__":
    run()
