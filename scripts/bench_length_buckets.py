"""Full padding vs length-aware batches on real MRPC rows, in one process (same machine state).

    python scripts/bench_length_buckets.py --model_dir=DIR --glue_dir=DIR [--train_steps=8]

DIR: a Google-layout checkpoint directory (bert_config.json, vocab.txt, bert_model.ckpt), e.g.
all-MiniLM-L6-v2 after bert-convert. Prints inference ex/s on the dev set (best of 2 rounds,
alternating) and the largest output difference, then training ex/s (after 2 warm-up steps) for
--length_buckets=0 and =8. Seq 128, batch 32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bert_finetune.allocator import use_bfc_allocator
from bert_finetune.onednn import use_onednn

# As our commands: set before TensorFlow loads.
use_onednn()
use_bfc_allocator()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bert_finetune import modeling, tokenization  # noqa: E402
from bert_finetune.classify import ClassifierModel  # noqa: E402
from bert_finetune.data import features, length_buckets, tfrecord  # noqa: E402
from bert_finetune.data.glue import PROCESSORS  # noqa: E402
from bert_finetune.runner import loops  # noqa: E402

SEQ, BATCH = 128, 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--glue_dir", required=True)
    parser.add_argument("--train_steps", type=int, default=8)
    args = parser.parse_args()
    config = modeling.BertConfig.from_json_file(os.path.join(args.model_dir, "bert_config.json"))
    tokenizer = tokenization.FullTokenizer(os.path.join(args.model_dir, "vocab.txt"), True)
    processor = PROCESSORS["mrpc"]()
    data = os.path.join(args.glue_dir, "MRPC")
    tmp = tempfile.mkdtemp(prefix="bench_buckets_")
    labels = processor.get_labels()
    dev, train = os.path.join(tmp, "dev.tf_record"), os.path.join(tmp, "train.tf_record")
    features.file_based_convert_examples_to_features(
        processor.get_dev_examples(data), labels, SEQ, tokenizer, dev)
    features.file_based_convert_examples_to_features(
        processor.get_train_examples(data), labels, SEQ, tokenizer, train)
    buckets = length_buckets.bucket_lengths(SEQ)
    init = os.path.join(args.model_dir, "bert_model.ckpt")

    model = ClassifierModel(config, 2, False)
    loops.restore_for_inference(model.variables_by_name(), os.path.join(tmp, "none"), init)
    strategy = tf.distribute.get_strategy()
    best, outs = {}, {}
    for _ in range(2):
        for name, b in (("full", None), ("buckets", buckets)):
            d = tfrecord.file_based_input_fn_builder(dev, SEQ, False, False, length_buckets=b)(
                {"batch_size": BATCH})
            t0 = time.perf_counter()
            outs[name] = loops.run_inference(strategy, model, d)
            n = len(outs[name]["predictions"])
            best[name] = max(best.get(name, 0.0), n / (time.perf_counter() - t0))
    diff = np.abs(outs["full"]["predictions"] - outs["buckets"]["predictions"]).max()
    print(f"inference, MRPC dev ({n} pairs): full padding {best['full']:.1f} ex/s, "
          f"length buckets {best['buckets']:.1f} ex/s ({best['buckets'] / best['full']:.2f}x); "
          f"max |probability difference| {diff:.2e}")

    for window in (0, 8):
        model = ClassifierModel(config, 2, False)
        out = os.path.join(tmp, f"train{window}")
        trainer = loops.Trainer(strategy, model, loops.TrainOptions(
            output_dir=out, train_batch_size=BATCH, num_train_steps=1000, num_warmup_steps=10,
            learning_rate=2e-5, init_checkpoint=init))
        trainer.restore_or_initialize()

        def dataset_fn(ctx, skip, window=window):
            return tfrecord.file_based_input_fn_builder(
                train, SEQ, True, True, seed=12345, skip_batches=skip,
                length_buckets=buckets if window else None, length_window=window)(
                    {"batch_size": BATCH})

        iterator = trainer.make_iterator(dataset_fn)
        trainer.train_steps(iterator, tf.constant(2))  # trace and warm up
        t0 = time.perf_counter()
        trainer.train_steps(iterator, tf.constant(args.train_steps))
        rate = args.train_steps * BATCH / (time.perf_counter() - t0)
        print(f"training, MRPC train, --length_buckets={window}: {rate:.1f} ex/s")


if __name__ == "__main__":
    main()
