"""Data preparation and input pipeline speed on real data, in one process (same machine state).

    python scripts/bench_data_prep.py --model_dir=DIR --glue_dir=DIR --squad_dir=DIR [--steps=12]

DIR: a Google-layout checkpoint directory (bert_config.json, vocab.txt, bert_model.ckpt), e.g.
all-MiniLM-L6-v2 after bert-convert; GLUE_DIR/MRPC/train.tsv; SQUAD_DIR/dev-v1.1.json.
Prints, best of 2 rounds:
- feature conversion (read + tokenize + features + TFRecords, as bert-classify / bert-squad write
  them): MRPC train at seq 128, SQuAD v1.1 dev at seq 384 / stride 128 / query 64, in ex/s;
- training from the real MRPC TFRecords (full padding, shuffled, parsed each step) against the
  same steps on one in-memory batch of the same shape, through the product's Trainer (seq 128,
  batch 32): the input pipeline's share of a training step.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from bert_finetune.allocator import use_bfc_allocator
from bert_finetune.onednn import use_onednn

# As our commands: set before TensorFlow loads.
use_onednn()
use_bfc_allocator()

import tensorflow as tf  # noqa: E402

from bert_finetune import modeling, tokenization  # noqa: E402
from bert_finetune.classify import ClassifierModel  # noqa: E402
from bert_finetune.data import features, squad, squad_features, tfrecord  # noqa: E402
from bert_finetune.data.glue import PROCESSORS  # noqa: E402
from bert_finetune.runner import loops  # noqa: E402

SEQ, BATCH = 128, 32


def best_of(rounds: int, fn) -> float:
    """The shortest wall time of `rounds` calls of fn()."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def conversion(args, tokenizer, tmp: str) -> str:
    processor = PROCESSORS["mrpc"]()
    mrpc = os.path.join(args.glue_dir, "MRPC")
    labels = processor.get_labels()
    count = {}

    def mrpc_convert():
        examples = processor.get_train_examples(mrpc)
        count["mrpc"] = features.file_based_convert_examples_to_features(
            examples, labels, SEQ, tokenizer, os.path.join(tmp, "mrpc.tf_record"))

    def squad_convert():
        examples = squad.read_squad_examples(os.path.join(args.squad_dir, "dev-v1.1.json"),
                                             is_training=False)
        count["squad"] = len(examples)
        _, count["windows"] = squad_features.write_features(
            examples, tokenizer, 384, 128, 64, False, os.path.join(tmp, "squad.tf_record"),
            keep=True)

    t_mrpc = best_of(2, mrpc_convert)
    t_squad = best_of(2, squad_convert)
    return (f"feature conversion: MRPC train {count['mrpc']} pairs in {t_mrpc:.2f} s = "
            f"{count['mrpc'] / t_mrpc:.0f} ex/s; SQuAD v1.1 dev {count['squad']} questions "
            f"({count['windows']} windows) in {t_squad:.2f} s = {count['squad'] / t_squad:.0f} "
            f"questions/s ({count['windows'] / t_squad:.0f} windows/s)")


def input_pipeline(args, tmp: str) -> str:
    config = modeling.BertConfig.from_json_file(os.path.join(args.model_dir, "bert_config.json"))
    init = os.path.join(args.model_dir, "bert_model.ckpt")
    train = os.path.join(tmp, "mrpc.tf_record")
    strategy = tf.distribute.get_strategy()
    first = next(iter(tfrecord.file_based_input_fn_builder(train, SEQ, False, True)(
        {"batch_size": BATCH})))

    def records(ctx, skip):
        return tfrecord.file_based_input_fn_builder(train, SEQ, True, True, seed=12345,
                                                    skip_batches=skip)({"batch_size": BATCH})

    def in_memory(ctx, skip):
        return tf.data.Dataset.from_tensors(first).repeat()

    rates: dict[str, list[float]] = {"records": [], "memory": []}
    trainers = {}
    for name, fn in (("records", records), ("memory", in_memory)):
        model = ClassifierModel(config, 2, False)
        trainer = loops.Trainer(strategy, model, loops.TrainOptions(
            output_dir=os.path.join(tmp, name), train_batch_size=BATCH, num_train_steps=10 ** 6,
            num_warmup_steps=10, learning_rate=2e-5, init_checkpoint=init))
        trainer.restore_or_initialize()
        iterator = trainer.make_iterator(fn)
        trainer.train_steps(iterator, tf.constant(2)).numpy()  # trace and warm up
        trainers[name] = (trainer, iterator)
    for _ in range(2):  # alternate, so both see the same machine state
        for name, (trainer, iterator) in trainers.items():
            t0 = time.perf_counter()
            trainer.train_steps(iterator, tf.constant(args.steps)).numpy()
            rates[name].append(args.steps * BATCH / (time.perf_counter() - t0))
    rec, mem = max(rates["records"]), max(rates["memory"])
    return (f"training, seq {SEQ}, batch {BATCH}, {args.steps} steps, best of 2: from TFRecords "
            f"{rec:.2f} ex/s, in-memory batch {mem:.2f} ex/s: records at {rec / mem:.3f}x "
            f"(medians {statistics.median(rates['records']):.2f} / "
            f"{statistics.median(rates['memory']):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--glue_dir", required=True)
    parser.add_argument("--squad_dir", required=True)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--parts", default="conversion,pipeline",
                        help="conversion and/or pipeline (the pipeline part needs the records "
                             "the conversion part writes, so it runs that first)")
    args = parser.parse_args()
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if not parts or parts - {"conversion", "pipeline"}:
        parser.error(f"--parts={args.parts}: use conversion, pipeline or both")
    tokenizer = tokenization.FullTokenizer(os.path.join(args.model_dir, "vocab.txt"), True)
    tmp = tempfile.mkdtemp(prefix="bench_data_prep_")
    try:
        print(conversion(args, tokenizer, tmp), flush=True)
        if "pipeline" in parts:
            print(input_pipeline(args, tmp), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
