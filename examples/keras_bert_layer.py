"""The Keras workflow of "Fine-tuning BERT with Keras and tf.Module", on raw sentence pairs.

    python examples/keras_bert_layer.py --bert_path=/tmp/bert_module --task=MRPC \
      --data_dir=$GLUE_DIR/MRPC --seq_len=128 --epochs=1 --output_dir=/tmp/keras_mrpc

The model is the article's: a string input -> BertLayer(pooling="cls", n_fine_tune_layers=3)
-> Dense(256, relu) -> Dense(1, sigmoid), trained with `model.fit` on "sentence1 ||| sentence2"
strings (tokenized in the graph, exactly as FullTokenizer). `--bert_path` is a `bert-export`
module or a checkpoint directory. The output directory gets the weights (`weights.h5`), the
model's JSON (`model.json`), a whole-model SavedModel (`saved_model/`) and `eval_results.txt`.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import tensorflow as tf
import tf_keras

from bert_finetune.data.glue import get_processor
from bert_finetune.export.keras_layer import BertLayer


def build_model(bert_path: str, seq_len: int = 128, n_fine_tune_layers: int = 3,
                learning_rate: float = 2e-5) -> tf_keras.Model:
    """The article's model, compiled (Adam, binary cross-entropy, accuracy)."""
    text = tf_keras.Input(shape=(), dtype=tf.string, name="text")
    pooled = BertLayer(bert_path, seq_len=seq_len, n_fine_tune_layers=n_fine_tune_layers,
                       pooling="cls", name="bert_layer")(text)
    dense = tf_keras.layers.Dense(256, activation="relu", name="dense")(pooled)
    prob = tf_keras.layers.Dense(1, activation="sigmoid", name="prob")(dense)
    model = tf_keras.Model(text, prob)
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                  loss="binary_crossentropy", metrics=["accuracy"])
    return model


def read_pairs(task: str, data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """("a ||| b" strings [N], labels [N] float32) of a GLUE pair task's train or dev split."""
    processor = get_processor(task)
    examples = (processor.get_train_examples(data_dir) if split == "train"
                else processor.get_dev_examples(data_dir))
    labels = processor.get_labels()
    texts = np.array([f"{e.text_a} ||| {e.text_b}" for e in examples], dtype=object)
    y = np.array([labels.index(e.label) for e in examples], dtype=np.float32)
    return texts, y


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bert_path", required=True)
    parser.add_argument("--task", default="MRPC", help="a GLUE pair task: MRPC, QQP, ...")
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--n_fine_tune_layers", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    parser.add_argument("--max_examples", type=int, default=0, help="0 = all")
    parser.add_argument("--no_eval", action="store_true")
    args = parser.parse_args(argv)

    x, y = read_pairs(args.task, args.data_dir, "train")
    if args.max_examples:
        x, y = x[:args.max_examples], y[:args.max_examples]
    model = build_model(args.bert_path, args.seq_len, args.n_fine_tune_layers,
                        args.learning_rate)
    model.summary(print_fn=print)
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True)
    os.makedirs(args.output_dir, exist_ok=True)
    model.save_weights(os.path.join(args.output_dir, "weights.h5"))
    with open(os.path.join(args.output_dir, "model.json"), "w", encoding="utf-8") as f:
        f.write(model.to_json())
    model.save(os.path.join(args.output_dir, "saved_model"))
    results = {"loss": history.history["loss"]}
    if not args.no_eval:
        dx, dy = read_pairs(args.task, args.data_dir, "dev")
        loss, accuracy = model.evaluate(dx, dy, batch_size=args.batch_size, verbose=0)
        results.update(eval_loss=loss, eval_accuracy=accuracy)
        with open(os.path.join(args.output_dir, "eval_results.txt"), "w",
                  encoding="utf-8") as f:
            f.write(f"eval_accuracy = {np.float32(accuracy)}\neval_loss = {np.float32(loss)}\n")
        print(f"eval_accuracy = {accuracy:.4f}, eval_loss = {loss:.4f}")
    return results


if __name__ == "__main__":
    main()
