"""Progress lines: the training loop logs at the chosen interval whatever iterations_per_loop is,
and the Progress helper (feature writing, evaluation, prediction) logs rate and ETA.

The runner runs reuse test_runner's tiny deterministic classifier and in-memory batches.
"""

from __future__ import annotations

import re

import numpy as np
from test_runner import (  # noqa: F401 - fixtures
    _read_checkpoint,
    _scalar_summaries,
    _trainer,
    absl_records,
    dataset_fn,
    init_checkpoint,
)

from bert_finetune.progress import Progress, hms, track

_LINE = re.compile(r"step (\d+)/(\d+)  loss = ([\d.]+)  lr = \S+  examples/sec = [\d.]+  "
                   r"ETA \d+:\d\d:\d\d")


def _progress_lines(records) -> list[int]:
    return [int(m.group(1)) for m in map(_LINE.search, records.messages) if m]


def test_progress_every_n_steps_when_a_loop_is_longer_than_the_run(
        tmp_path, init_checkpoint, absl_records):  # noqa: F811
    # 7 steps, iterations_per_loop 1000: one loop on TPU; off TPU a line every 3 steps.
    trainer = _trainer(tmp_path / "a", init_checkpoint, num_train_steps=7,
                       iterations_per_loop=1000, save_checkpoints_steps=1000,
                       log_every_n_steps=3)
    trainer.train(dataset_fn)
    assert _progress_lines(absl_records) == [3, 6, 7]
    assert [s for s, _ in trainer.history] == [3, 6, 7]
    # TensorBoard scalars as before (one point per line), checkpoints only where asked.
    assert [s for s, _ in _scalar_summaries(tmp_path / "a", "loss")] == [3, 6, 7]
    assert sorted(p.name for p in (tmp_path / "a").glob("model.ckpt-*.index")) == [
        "model.ckpt-7.index"]

    # Cutting the loops for logging changes nothing in the training itself.
    whole = _trainer(tmp_path / "b", init_checkpoint, num_train_steps=7,
                     iterations_per_loop=1000, save_checkpoints_steps=1000,
                     log_every_n_steps=0, log_every_secs=0)
    whole.train(dataset_fn)
    assert [s for s, _ in whole.history] == [7]
    want = _read_checkpoint(str(tmp_path / "b" / "model.ckpt-7"))
    got = _read_checkpoint(str(tmp_path / "a" / "model.ckpt-7"))
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_progress_after_log_every_secs(tmp_path, init_checkpoint, absl_records):  # noqa: F811
    # A time bound shorter than any step: every call stops after one step (and so logs).
    trainer = _trainer(tmp_path, init_checkpoint, num_train_steps=4, iterations_per_loop=1000,
                       save_checkpoints_steps=1000, log_every_n_steps=1000,
                       log_every_secs=1e-9)
    trainer.train(dataset_fn)
    assert _progress_lines(absl_records) == [1, 2, 3, 4]
    assert int(trainer.global_step.numpy()) == 4


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_helper_logs_rate_and_eta_only_for_long_phases():
    clock, lines = _Clock(), []

    def log(fmt, *args):
        lines.append(fmt % args)

    quick = Progress("Writing x", 100, clock=clock, log=log)
    for _ in range(100):
        clock.now += 0.01
        quick.advance()
    quick.finish()
    assert lines == []  # 1 s in all: silent

    clock.now = 0.0
    slow = Progress("Writing y", 100, every_secs=10, quiet_secs=5, clock=clock, log=log)
    for _ in range(100):
        clock.now += 0.5  # 2 examples/s, 50 s in all
        slow.advance()
    slow.finish()
    # At 10 s, 20 s, 30 s, 40 s, 50 s, then the final line.
    assert len(lines) == 6, lines
    assert lines[0] == "Writing y: 20/100 (20%)  2.0 examples/s  ETA 0:00:40"
    assert lines[-1] == "Writing y: 100/100 (100%)  2.0 examples/s  elapsed 0:00:50"

    lines.clear()
    clock.now = 0.0
    items = list(track(range(30), "Predicting", unit="batches", clock=clock, log=log,
                       every_secs=1, quiet_secs=0))
    assert items == list(range(30)) and lines[-1].startswith("Predicting: 30/30 (100%)")
    assert Progress("n", None, clock=clock, log=log).line() == "n: 0  0.0 examples/s  elapsed 0:00:00"
    assert hms(3725.9) == "1:02:05"
