"""The training loop in-process on the default strategy: checkpoints, resume, summaries, XLA, bf16.

Every run uses a tiny classifier with dropout 0 (deterministic) fed fixed in-memory batches.
"""

from __future__ import annotations

import logging as std_logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import TINY_CONFIG

from bert_finetune import checkpoints, modeling
from bert_finetune.classify import ClassifierModel
from bert_finetune.runner import loops

CONFIG = modeling.BertConfig(**dict(TINY_CONFIG, num_hidden_layers=2, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0))
BATCH, SEQ, NUM_EXAMPLES = 8, 12, 32


def _features(num: int = NUM_EXAMPLES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    mask = (np.arange(SEQ)[None, :] < rng.integers(4, SEQ + 1, [num, 1])).astype(np.int32)
    return {
        "input_ids": rng.integers(1, CONFIG.vocab_size, [num, SEQ]).astype(np.int32) * mask,
        "input_mask": mask,
        "segment_ids": (np.arange(SEQ)[None, :] >= SEQ // 2).astype(np.int32) * mask,
        "label_ids": rng.integers(0, 2, [num]).astype(np.int32),
        "is_real_example": np.ones([num], np.int32),
    }


FEATURES = _features()


def dataset_fn(ctx: tf.distribute.InputContext, skip_batches: int,
               features: dict = FEATURES, drop_remainder: bool = True) -> tf.data.Dataset:
    """The examples in a fixed order, repeated: step k trains on batch k mod (N / B)."""
    batch = ctx.get_per_replica_batch_size(BATCH)
    d = tf.data.Dataset.from_tensor_slices(features).repeat()
    return d.batch(batch, drop_remainder=drop_remainder).skip(skip_batches)


def _model(compute_dtype: str = "float32") -> ClassifierModel:
    model = ClassifierModel(CONFIG, num_labels=2, is_regression=False,
                            compute_dtype=compute_dtype)
    model.head.dropout_prob = 0.0  # the head's dropout is fixed at 0.1 as in the original
    return model


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory) -> str:
    """One set of initial weights (encoder and head), shared by every run."""
    tf.random.set_seed(1234)
    arrays = {k: v.numpy() for k, v in _model().variables_by_name().items()}
    return checkpoints.write_checkpoint(str(tmp_path_factory.mktemp("init") / "init.ckpt"), arrays)


def _trainer(output_dir: Path, init: str, **overrides) -> loops.Trainer:
    kwargs = dict(output_dir=str(output_dir), train_batch_size=BATCH, num_train_steps=6,
                  num_warmup_steps=1, learning_rate=1e-3, save_checkpoints_steps=100,
                  iterations_per_loop=1, init_checkpoint=init)
    compute_dtype = overrides.pop("compute_dtype", "float32")
    kwargs.update(overrides)
    return loops.Trainer(tf.distribute.get_strategy(), _model(compute_dtype),
                         loops.TrainOptions(**kwargs))


def _read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def _scalar_summaries(directory: Path, tag: str) -> list[tuple[int, float]]:
    events = sorted(directory.glob("events.out.tfevents.*"))
    assert len(events) == 1, events
    found = []
    for event in tf.compat.v1.train.summary_iterator(str(events[0])):
        for value in event.summary.value:
            if value.tag == tag:
                found.append((event.step, float(tf.make_ndarray(value.tensor))))
    return found


@pytest.fixture
def absl_records(caplog):
    caplog.set_level(std_logging.INFO, logger="absl")
    return caplog


def test_checkpoints_summaries_and_loops(tmp_path, init_checkpoint):
    out = tmp_path / "out"
    trainer = _trainer(out, init_checkpoint, num_train_steps=7, save_checkpoints_steps=3,
                       iterations_per_loop=2, keep_checkpoint_max=2)
    result = trainer.train(dataset_fn)

    # A loop stops early at each checkpoint step and at the end: 2, 3 | 5, 6 | 7.
    assert [s for s, _ in trainer.history] == [2, 3, 5, 6, 7]
    assert result["global_step"] == 7 and result["loss"] == trainer.history[-1][1]
    # Saved at 3, 6 and 7; keep_checkpoint_max=2 deleted model.ckpt-3.
    assert not list(out.glob("model.ckpt-3.*"))
    assert sorted(p.name for p in out.glob("model.ckpt-*.index")) == [
        "model.ckpt-6.index", "model.ckpt-7.index"]
    state = tf.train.get_checkpoint_state(str(out))
    assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == [
        "model.ckpt-6", "model.ckpt-7"]
    assert tf.train.latest_checkpoint(str(out)) == str(out / "model.ckpt-7")

    saved = _read_checkpoint(str(out / "model.ckpt-7"))
    assert saved["global_step"] == 7
    # Original names: every variable and its two Adam slots.
    names = set(trainer.task.variables_by_name())
    assert set(saved) == names | {f"{n}/adam_{s}" for n in names for s in "mv"} | {"global_step"}
    for name, var in trainer.task.variables_by_name().items():
        np.testing.assert_array_equal(saved[name], var.numpy(), err_msg=name)

    # One "loss" scalar per loop, at its last step, equal to what train() saw.
    logged = _scalar_summaries(out, "loss")
    assert [s for s, _ in logged] == [2, 3, 5, 6, 7]
    np.testing.assert_allclose([v for _, v in logged], [v for _, v in trainer.history],
                               rtol=1e-6)
    assert [s for s, _ in _scalar_summaries(out, "learning_rate")] == [2, 3, 5, 6, 7]


def test_resume_matches_an_uninterrupted_run(tmp_path, init_checkpoint, absl_records):
    full = tmp_path / "full"
    straight = _trainer(full, init_checkpoint, num_train_steps=6, save_checkpoints_steps=3)
    straight.train(dataset_fn)

    # An interrupted run: only model.ckpt-3 made it to disk.
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    for f in full.glob("model.ckpt-3.*"):
        shutil.copy(f, resumed_dir)
    (resumed_dir / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-3"\n')

    trainer = _trainer(resumed_dir, init_checkpoint, num_train_steps=6, save_checkpoints_steps=3)
    assert trainer.restore_or_initialize() == 3
    at_3 = _read_checkpoint(str(full / "model.ckpt-3"))
    slots = trainer.optimizer.slot_variables()
    name = "bert/encoder/layer_1/output/dense/kernel"
    for slot in ("adam_m", "adam_v"):
        assert np.abs(at_3[f"{name}/{slot}"]).max() > 0
        np.testing.assert_array_equal(slots[f"{name}/{slot}"].numpy(), at_3[f"{name}/{slot}"])

    result = trainer.train(dataset_fn)
    assert "Continuing training at step 3 of 6" in absl_records.text
    assert [s for s, _ in trainer.history] == [4, 5, 6]
    assert result["global_step"] == 6
    # Same data (the stream skips the batches already trained on), same state: same result.
    np.testing.assert_allclose([v for _, v in trainer.history],
                               [v for _, v in straight.history[3:]], rtol=1e-6)
    want = _read_checkpoint(str(full / "model.ckpt-6"))
    got = _read_checkpoint(str(resumed_dir / "model.ckpt-6"))
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)

    # Running the finished job again trains nothing and writes nothing.
    files = sorted(p.name for p in resumed_dir.iterdir())
    again = _trainer(resumed_dir, init_checkpoint, num_train_steps=6, save_checkpoints_steps=3)
    absl_records.clear()
    result = again.train(dataset_fn)
    assert result["global_step"] == 6 and np.isnan(result["loss"])
    assert again.history == []
    assert "Training already complete" in absl_records.text
    assert sorted(p.name for p in resumed_dir.iterdir()) == files


def test_iterations_per_loop_run_in_one_call(tmp_path, init_checkpoint):
    trainer = _trainer(tmp_path, init_checkpoint)
    iterator = trainer.make_iterator(dataset_fn)
    trainer.train_steps(iterator, tf.constant(3))
    assert int(trainer.global_step.numpy()) == 3
    trainer.train_steps(iterator, tf.constant(2))
    assert int(trainer.global_step.numpy()) == 5
    # The step count is a tensor, so a different count does not retrace the loop.
    assert trainer.train_steps.experimental_get_tracing_count() == 1


def test_loss_decreases_when_overfitting_a_batch(tmp_path, init_checkpoint):
    one_batch = {k: v[:BATCH] for k, v in FEATURES.items()}
    trainer = _trainer(tmp_path, init_checkpoint, num_train_steps=15, num_warmup_steps=0,
                       learning_rate=3e-3)
    trainer.train(lambda ctx, skip: dataset_fn(ctx, skip, one_batch))
    losses = [v for _, v in trainer.history]
    assert losses[-1] < 0.5 * losses[0], losses


def train_off_and_on(tmp_path, init: str, option: str, data=dataset_fn) -> dict[bool, tuple]:
    """4 steps with TrainOptions.<option> False and True: {value: (trainer, the names of the
    XLA-compiled functions in its step, the optimizer's own excepted)}."""
    runs = {}
    for on in (False, True):
        trainer = _trainer(tmp_path / str(on), init, num_train_steps=4, **{option: on})
        trainer.train(data)
        graph = trainer.train_steps.get_concrete_function(
            trainer.make_iterator(data), tf.TensorSpec([], tf.int32)).graph
        compiled = [f.signature.name for f in graph.as_graph_def().library.function
                    if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b
                    and "adam_weight_decay_step" not in f.signature.name]  # always compiled
        runs[on] = trainer, compiled
    return runs


def assert_same_training(runs: dict[bool, tuple], loss_rtol: float, **tolerance) -> None:
    """Same losses (loss_rtol) and final variables (tolerance) with the option off and on."""
    (off, _), (on, _) = runs[False], runs[True]
    np.testing.assert_allclose([v for _, v in on.history], [v for _, v in off.history],
                               rtol=loss_rtol)
    for name, var in off.task.variables_by_name().items():
        np.testing.assert_allclose(on.task.variables_by_name()[name].numpy(), var.numpy(),
                                   err_msg=name, **tolerance)


def test_xla_matches_no_xla(tmp_path, init_checkpoint):
    """use_xla jit-compiles the gradient computation: same losses within rtol 1e-4 (fp32; XLA
    fuses and reorders float ops, so bit equality is not expected)."""
    runs = train_off_and_on(tmp_path, init_checkpoint, "use_xla")
    for use_xla, (_, compiled) in runs.items():
        assert len(compiled) == int(use_xla), compiled  # the gradient function
    assert_same_training(runs, 1e-4, atol=1e-4)


def test_xla_requires_static_shapes(tmp_path, init_checkpoint):
    """As on TPU: a batch dimension of None (drop_remainder=False) is refused up front."""
    trainer = _trainer(tmp_path, init_checkpoint, use_xla=True)
    with pytest.raises(ValueError, match="drop_remainder=True"):
        trainer.train(lambda ctx, skip: dataset_fn(ctx, skip, drop_remainder=False))
    assert not list(tmp_path.glob("model.ckpt-*"))


@pytest.mark.parametrize("xla_kernels", [False, True])  # as the commands train bf16 on CPU
def test_bfloat16_training(tmp_path, init_checkpoint, xla_kernels):
    one_batch = {k: v[:BATCH] for k, v in FEATURES.items()}
    trainer = _trainer(tmp_path, init_checkpoint, num_train_steps=8, num_warmup_steps=0,
                       learning_rate=3e-3, compute_dtype="bfloat16", xla_kernels=xla_kernels)
    data = lambda ctx, skip: dataset_fn(ctx, skip, one_batch)  # noqa: E731
    trainer.train(data)
    graph = trainer.train_steps.get_concrete_function(
        trainer.make_iterator(data), tf.TensorSpec([], tf.int32)).graph
    compiled = [f.signature.name for f in graph.as_graph_def().library.function]
    assert any("gelu_backward" in n for n in compiled) == xla_kernels, compiled
    losses = np.array([v for _, v in trainer.history])
    assert np.isfinite(losses).all(), losses
    assert losses[-1] < losses[0] and losses[-3:].mean() < losses[:3].mean(), losses
    # Variables stay float32; the checkpoint is the same as an fp32 run's.
    saved = _read_checkpoint(str(tmp_path / "model.ckpt-8"))
    assert saved["output_weights"].dtype == np.float32


def test_restore_for_inference(tmp_path, init_checkpoint, caplog):
    init = _read_checkpoint(init_checkpoint)
    out = tmp_path / "out"
    name = "bert/pooler/dense/kernel"

    # No output_dir yet: the encoder and head come from init_checkpoint.
    model = _model()
    variables = model.variables_by_name()
    assert loops.restore_for_inference(variables, str(out), init_checkpoint) == 0
    np.testing.assert_array_equal(variables[name].numpy(), init[name])

    # A fine-tuned checkpoint in output_dir wins, and its step is returned.
    trainer = _trainer(out, init_checkpoint, num_train_steps=2)
    trainer.train(dataset_fn)
    tuned = _read_checkpoint(str(out / "model.ckpt-2"))
    assert not np.array_equal(tuned[name], init[name])
    model = _model()
    variables = model.variables_by_name()
    assert loops.restore_for_inference(variables, str(out), init_checkpoint) == 2
    for k, var in variables.items():
        np.testing.assert_array_equal(var.numpy(), tuned[k], err_msg=k)

    # Neither: random weights, step 0.
    assert loops.restore_for_inference(_model().variables_by_name(), str(tmp_path / "x"),
                                       None) == 0
    # An encoder loaded from a module is said so, not "random weights".
    caplog.clear()
    with caplog.at_level("WARNING"):
        loops.restore_for_inference(_model().variables_by_name(), str(tmp_path / "x"), None,
                                    "/m/bert_module")
    assert "the encoder of /m/bert_module and an untrained head" in caplog.text
    assert "random weights" not in caplog.text


def test_inference_input_runs_without_tf_data_autotuning(monkeypatch):
    """The input of an inference pass: in order, not sharded, and without tf.data's autotuning
    (whose thread made the end of a pass wait up to its next wake-up)."""

    class Doubler(tf.Module):
        def predict(self, features):
            return {"y": features["x"] * 2.0}

    strategy = tf.distribute.get_strategy()
    seen = []
    distribute = strategy.experimental_distribute_dataset

    def spy(dataset, *args, **kwargs):
        seen.append(dataset.options())
        return distribute(dataset, *args, **kwargs)

    monkeypatch.setattr(strategy, "experimental_distribute_dataset", spy)
    dataset = tf.data.Dataset.from_tensor_slices({"x": tf.range(7, dtype=tf.float32)}).batch(3)
    out = loops.run_inference(strategy, Doubler(), dataset, kernels=False)
    np.testing.assert_array_equal(out["y"], np.arange(7) * 2.0)
    assert len(seen) == 1 and seen[0].autotune.enabled is False
    assert (seen[0].experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.OFF)
    assert loops.inference_dataset_options(multi_worker=True).autotune.enabled is False
