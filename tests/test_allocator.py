"""Our commands run TensorFlow with the BFC CPU allocator (bert_finetune.allocator).

The proof that it takes effect: TensorFlow keeps allocator statistics for CPU:0 only with BFC
(`get_memory_info` raises otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from bert_finetune import allocator


def test_defaults_and_what_the_user_set_wins():
    env: dict = {}
    allocator.use_bfc_allocator(env)
    assert env[allocator.USE_BFC] == "true"
    assert int(env[allocator.LIMIT_MB]) >= 1 << 16  # never below TensorFlow's own 64 GiB
    env = {allocator.USE_BFC: "false"}
    allocator.use_bfc_allocator(env)
    assert env == {allocator.USE_BFC: "false"}
    env = {allocator.LIMIT_MB: "1234"}
    allocator.use_bfc_allocator(env)
    assert env == {allocator.USE_BFC: "true", allocator.LIMIT_MB: "1234"}


PROBE = textwrap.dedent("""
    import bert_finetune.cli.classify  # what the bert-classify console script imports first
    import tensorflow as tf
    tf.ones([64, 64]) + 1.0
    try:
        tf.config.experimental.get_memory_info("CPU:0")
        print("bfc")
    except ValueError:
        print("malloc")
""")


def _allocator_of_a_command(**env_overrides) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in (allocator.USE_BFC, allocator.LIMIT_MB)}
    # With oneDNN on, TensorFlow allocates through oneDNN's own pooled CPU allocator (which also
    # keeps statistics) whatever this setting says; the setting is what counts with it off.
    env.update(env_overrides, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1",
               TF_ENABLE_ONEDNN_OPTS="0")
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True, timeout=300).stdout
    return out.strip().splitlines()[-1]


def test_commands_use_bfc_unless_the_user_says_otherwise():
    assert _allocator_of_a_command() == "bfc"
    assert _allocator_of_a_command(**{allocator.USE_BFC: "false"}) == "malloc"
