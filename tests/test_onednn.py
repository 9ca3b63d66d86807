"""Our commands run TensorFlow's CPU kernels on oneDNN (bert_finetune.onednn), and the oneDNN
path computes what TensorFlow's Eigen path computes: the encoder's outputs and every
gradient, attention's batched matmuls included, within fp32 noise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from conftest import TINY_CONFIG

from bert_finetune import onednn

# fp32 sums in another order (oneDNN's blocked GEMMs vs Eigen's): measured differences ~1e-7
# of values ~1; the bound leaves room for other CPUs.
RTOL, ATOL = 1e-4, 1e-5


def _env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k != onednn.ONEDNN_OPTS}
    env.update(overrides, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    return env


def _run(code: str, *args: str, **env) -> str:
    """The last line `code` prints, run in a fresh Python with `env` over ours."""
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(**env),
                          capture_output=True, text=True, check=True,
                          timeout=300).stdout.strip().splitlines()[-1]


def test_defaults_and_what_the_user_set_wins():
    env: dict = {}
    onednn.use_onednn(env)
    assert env == {onednn.ONEDNN_OPTS: "1"}
    env = {onednn.ONEDNN_OPTS: "0"}
    onednn.use_onednn(env)
    assert env == {onednn.ONEDNN_OPTS: "0"}


PROBE = textwrap.dedent("""
    import bert_finetune.cli.classify  # what the bert-classify console script imports first
    from bert_finetune.onednn import onednn_enabled
    print(onednn_enabled())
""")


def test_commands_run_on_onednn_unless_the_user_says_otherwise():
    assert _run(PROBE) == "True"
    assert _run(PROBE, **{onednn.ONEDNN_OPTS: "0"}) == "False"


# The tiny encoder with fixed weights and a padded batch; writes outputs and gradients to npz.
ENCODER = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    from bert_finetune import modeling
    from bert_finetune.onednn import onednn_enabled

    config = modeling.BertConfig(**{config!r})
    model = modeling.BertModel(config)
    rng = np.random.default_rng(0)
    for v in model.variables:  # the same weights in both processes, whatever the initializers
        v.assign(rng.normal(0.0, 0.2, v.shape).astype(np.float32))
    ids = rng.integers(0, config.vocab_size, (4, 40)).astype(np.int32)
    mask = np.ones((4, 40), np.int32)
    mask[1, 17:] = 0
    mask[3, 31:] = 0
    segments = np.zeros((4, 40), np.int32)
    segments[:, 20:] = 1
    with tf.GradientTape() as tape:
        out = model(ids, mask, segments, training=False)
        loss = tf.reduce_sum(out["sequence_output"] ** 2) + tf.reduce_sum(out["pooled_output"])
    grads = tape.gradient(loss, model.variables)
    arrays = {{"sequence_output": out["sequence_output"].numpy(),
               "pooled_output": out["pooled_output"].numpy()}}
    arrays.update({{v.name: tf.convert_to_tensor(g).numpy()
                   for v, g in zip(model.variables, grads)}})
    np.savez(sys.argv[1], **arrays)
    print(onednn_enabled())
""")


def test_onednn_computes_what_eigen_computes(tmp_path: Path):
    config = {**TINY_CONFIG, "hidden_size": 96, "num_attention_heads": 4, "num_hidden_layers": 3,
              "intermediate_size": 128}
    code = ENCODER.format(config=config)
    results = {}
    for value, expected in (("1", "True"), ("0", "False")):
        path = tmp_path / f"onednn{value}.npz"
        assert _run(code, str(path), **{onednn.ONEDNN_OPTS: value}) == expected
        results[value] = np.load(path)
    on, off = results["1"], results["0"]
    assert sorted(on.files) == sorted(off.files) and len(on.files) > 40
    for name in off.files:
        assert np.all(np.isfinite(off[name])), name
        np.testing.assert_allclose(on[name], off[name], rtol=RTOL,
                                   atol=ATOL * max(1.0, float(np.abs(off[name]).max())),
                                   err_msg=name)
