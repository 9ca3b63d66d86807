"""XLA for inference: the per-device default (runner.xla) and compiled inference equal to plain.

Tolerance (fp32): XLA fuses and reorders float ops, so outputs equal the plain path's within
rtol 1e-5 / atol 1e-5, not bitwise.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_length_buckets import NUM, SEQ, _write_records
from test_runner import CONFIG

from bert_finetune import hardware
from bert_finetune.classify import ClassifierModel
from bert_finetune.data import length_buckets, tfrecord
from bert_finetune.runner import loops, xla

STRATEGY = tf.distribute.get_strategy()


def _cpu(monkeypatch, avx512: bool) -> None:
    monkeypatch.setattr(hardware, "has_avx512", lambda: avx512)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: [])


@pytest.mark.parametrize("given", [True, False])
def test_the_flag_wins_on_any_cpu(monkeypatch, given):
    for avx512 in (True, False):
        _cpu(monkeypatch, avx512)
        for num_batches in (None, 1, 10 ** 6):
            use, why = xla.inference_xla(given, STRATEGY, num_batches)
            assert use is given and f"--use_xla={str(given).lower()}" in why


def test_default_is_off_on_avx512_cpus(monkeypatch):
    _cpu(monkeypatch, avx512=True)
    use, why = xla.inference_xla(None, STRATEGY, 10 ** 6)
    assert not use and "AVX-512" in why


def test_default_on_avx2_cpus_only_for_long_runs(monkeypatch):
    _cpu(monkeypatch, avx512=False)
    n = xla.MIN_INFERENCE_BATCHES
    assert xla.inference_xla(None, STRATEGY, n)[0]
    assert xla.inference_xla(None, STRATEGY, 50 * n)[0]
    for short in (None, 1, n - 1):
        use, why = xla.inference_xla(None, STRATEGY, short)
        assert not use and "AVX2-only" in why


def test_default_is_off_on_gpu(monkeypatch):
    monkeypatch.setattr(hardware, "has_avx512", lambda: False)
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["/GPU:0"])
    assert not xla.inference_xla(None, STRATEGY, 10 ** 6)[0]


def test_cpu_flags_are_read():
    model, flags = hardware.cpu_model_and_flags()
    assert isinstance(model, str) and isinstance(flags, frozenset)
    assert hardware.has_avx512() == ("avx512f" in flags)


def _compiled_functions(step, features) -> list[str]:
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec([None, None] if t.shape.rank == 2
                                                          else [None], t.dtype), features)
    graph = step.get_concrete_function(spec).graph
    return [f.signature.name for f in graph.as_graph_def().library.function
            if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]


def test_xla_inference_equals_plain_over_bucket_shapes(tmp_path):
    """Length-bucketed batches (several shapes, a partial last batch): compiled == plain."""
    path = str(tmp_path / "eval.tf_record")
    _write_records(path)
    tf.random.set_seed(5)
    model = ClassifierModel(CONFIG, num_labels=2, is_regression=False)
    dataset = tfrecord.file_based_input_fn_builder(
        path, SEQ, is_training=False, drop_remainder=False,
        length_buckets=length_buckets.bucket_lengths(SEQ))({"batch_size": 8})
    shapes = {tuple(b["input_ids"].shape) for b in dataset}
    assert len(shapes) >= 3, shapes  # more than one compilation
    first = next(iter(dataset))
    outs = {}
    for use_xla in (False, True):
        compiled = _compiled_functions(
            loops.inference_step(STRATEGY, model, use_xla, kernels=False), first)
        assert len(compiled) == int(use_xla), compiled  # ClassifierModel.predict, compiled
        # By default on CPU, inference that is not compiled whole runs its element-wise chains
        # as XLA kernels (bert_finetune.fused); compiled whole, it has no kernels of its own.
        compiled = _compiled_functions(loops.inference_step(STRATEGY, model, use_xla), first)
        kernels = [n for n in compiled if any(k in n for k in ("gelu", "norm", "softmax"))]
        assert bool(kernels) == (not use_xla) and len(compiled) == len(kernels) + use_xla, compiled
        outs[use_xla] = loops.run_inference(STRATEGY, model, dataset, num_examples=NUM,
                                            use_xla=use_xla)
    assert len(outs[True]["predictions"]) == NUM
    for key in ("per_example_loss", "predictions", "label_ids"):
        np.testing.assert_allclose(outs[True][key], outs[False][key], rtol=1e-5, atol=1e-5,
                                   err_msg=key)
