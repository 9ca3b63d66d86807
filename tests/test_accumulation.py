"""Gradient accumulation: N micro-batches per step equal one step on the whole batch.

Tolerance (fp32): losses rtol 1e-5, variables and Adam slots rtol 1e-5 / atol 1e-6 after 6
steps. The micro-batch sums add the same terms in another order; nothing else differs.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_runner import (
    BATCH,
    _read_checkpoint,
    _trainer,
    dataset_fn,
    init_checkpoint,  # noqa: F401 - fixture
)

from bert_finetune.errors import UserError

# A low clip norm so that clipping is active on every step: clipping each micro-batch's
# gradient instead of the sum would change the result.
_COMMON = dict(num_train_steps=6, num_warmup_steps=1, learning_rate=3e-3, clip_norm=0.05,
               save_checkpoints_steps=3, iterations_per_loop=2)


def _assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_accumulated_micro_batches_equal_one_big_batch(tmp_path, init_checkpoint):  # noqa: F811
    big = _trainer(tmp_path / "big", init_checkpoint, **_COMMON)
    big.train(dataset_fn)
    acc = _trainer(tmp_path / "acc", init_checkpoint, gradient_accumulation_steps=4, **_COMMON)
    seen = []  # the batch sizes the model is traced with
    per_example_loss = acc.task.per_example_loss

    def spy(features, training):
        seen.append(features["input_ids"].shape[0])
        return per_example_loss(features, training)

    acc.task.per_example_loss = spy
    acc.train(dataset_fn)
    assert seen and set(seen) == {BATCH // 4}, seen
    # Same steps and schedule, same loss of each step's whole batch, same checkpoints.
    assert [s for s, _ in acc.history] == [s for s, _ in big.history] == [2, 3, 5, 6]
    np.testing.assert_allclose([v for _, v in acc.history], [v for _, v in big.history],
                               rtol=1e-5)
    want = _read_checkpoint(str(tmp_path / "big" / "model.ckpt-6"))
    _assert_same(_read_checkpoint(str(tmp_path / "acc" / "model.ckpt-6")), want)
    assert int(want["global_step"]) == 6

    # The clip is active at this norm (without it the run ends elsewhere), so clipping each
    # micro-batch's gradient instead of their sum could not have matched.
    unclipped = _trainer(tmp_path / "u", init_checkpoint, **dict(_COMMON, clip_norm=1e9))
    unclipped.train(dataset_fn)
    got = _read_checkpoint(str(tmp_path / "u" / "model.ckpt-6"))
    assert not np.allclose(got["output_weights"], want["output_weights"], rtol=1e-3)

    # Resume from model.ckpt-3 of the accumulating run: same end as both straight runs.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for f in (tmp_path / "acc").glob("model.ckpt-3.*"):
        shutil.copy(f, resumed)
    (resumed / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-3"\n')
    again = _trainer(resumed, init_checkpoint, gradient_accumulation_steps=4, **_COMMON)
    again.train(dataset_fn)
    assert [s for s, _ in again.history] == [5, 6]
    _assert_same(_read_checkpoint(str(resumed / "model.ckpt-6")), want)


def test_accumulation_steps_must_divide_the_batch(tmp_path, init_checkpoint):  # noqa: F811
    with pytest.raises(UserError, match="gradient_accumulation_steps=3"):
        _trainer(tmp_path, init_checkpoint, gradient_accumulation_steps=3)
    assert BATCH % 3
