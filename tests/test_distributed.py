"""tf.distribute for real: 2 replicas equal 1, and a 2-process MultiWorkerMirroredStrategy run.

Both need TensorFlow configured before it starts, so they run in subprocesses: this file is also
the script of the MirroredStrategy run (`python tests/test_distributed.py parity ROOT`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, TINY_CONFIG, require_shared
from test_runner import BATCH, FEATURES, _model, dataset_fn

TIMEOUT = 600  # seconds, per subprocess run: catches a hang, not a slow (shared) machine
STEPS, SAVE_EVERY = 6, 3
PREDICT_EXAMPLES = 9


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _read_checkpoint(prefix: Path) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(prefix))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


# -- MirroredStrategy over 2 logical CPUs == the default strategy ---------------------------------
def _parity_main(root: Path) -> None:
    """Trains the same model from the same weights on the same global batches three ways."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bert_finetune import checkpoints
    from bert_finetune.runner import loops

    tf.random.set_seed(1234)
    init = checkpoints.write_checkpoint(
        str(root / "init" / "init.ckpt"),
        {k: v.numpy() for k, v in _model().variables_by_name().items()})

    def train(strategy: tf.distribute.Strategy, name: str, accumulate: int = 1) -> dict:
        with strategy.scope():
            model = _model()
        options = loops.TrainOptions(
            output_dir=str(root / name), train_batch_size=BATCH, num_train_steps=STEPS,
            num_warmup_steps=1, learning_rate=1e-3, save_checkpoints_steps=SAVE_EVERY,
            iterations_per_loop=1, init_checkpoint=init, gradient_accumulation_steps=accumulate,
            xla_kernels=True)  # as the commands train on CPU: fused chains in every replica
        trainer = loops.Trainer(strategy, model, options)
        trainer.train(dataset_fn)
        return {"replicas": strategy.num_replicas_in_sync, "history": trainer.history}

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {"one": train(tf.distribute.get_strategy(), "one"),
               "two": train(mirrored, "two")}
    # A 2-replica run interrupted after its first checkpoint, then resumed.
    (root / "resumed").mkdir()
    for f in (root / "two").glob(f"model.ckpt-{SAVE_EVERY}.*"):
        shutil.copy(f, root / "resumed")
    (root / "resumed" / "checkpoint").write_text(f'model_checkpoint_path: "model.ckpt-{SAVE_EVERY}"')
    results["resumed"] = train(mirrored, "resumed")
    # Each replica's 4 examples as 2 micro-batches of 2, their gradients summed per replica.
    results["two_acc"] = train(mirrored, "two_acc", accumulate=2)
    (root / "results.json").write_text(json.dumps(results))

    # Inference: global batches of 4, 4 and 1 split across the replicas and gathered back.
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: v[:PREDICT_EXAMPLES] for k, v in FEATURES.items()}).batch(4)
    for name, strategy in (("one", tf.distribute.get_strategy()), ("two", mirrored)):
        with strategy.scope():
            model = _model()
        loops.restore_for_inference(model.variables_by_name(), str(root / "one"), None)
        np.savez(root / f"predict_{name}.npz", **loops.run_inference(strategy, model, dataset))


def test_two_replicas_match_one(tmp_path):
    """MirroredStrategy on 2 CPUs (per-replica batch 4) == default strategy (batch 8), also
    with gradient accumulation (2 micro-batches of 2 per replica).

    Tolerance: losses rtol 1e-5, weights and Adam slots atol 1e-5 (fp32; only the order of the
    gradient sums differs). The resumed 2-replica run must skip 2 batches per step it resumes.
    Then run_inference under both strategies.
    """
    proc = subprocess.run([sys.executable, __file__, "parity", str(tmp_path)], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"parity run failed:\n{_tail(proc.stderr)}"
    results = json.loads((tmp_path / "results.json").read_text())
    one, two, resumed = results["one"], results["two"], results["resumed"]
    assert (one["replicas"], two["replicas"], resumed["replicas"]) == (1, 2, 2)

    assert [s for s, _ in one["history"]] == list(range(1, STEPS + 1))
    assert [s for s, _ in two["history"]] == list(range(1, STEPS + 1))
    losses = np.array([v for _, v in one["history"]])
    assert len(set(losses.tolist())) == STEPS  # every step saw a different batch
    np.testing.assert_allclose([v for _, v in two["history"]], losses, rtol=1e-5)
    assert results["two_acc"]["replicas"] == 2
    np.testing.assert_allclose([v for _, v in results["two_acc"]["history"]], losses, rtol=1e-5)
    assert [s for s, _ in resumed["history"]] == list(range(SAVE_EVERY + 1, STEPS + 1))
    np.testing.assert_allclose([v for _, v in resumed["history"]], losses[SAVE_EVERY:], rtol=1e-5)

    want = _read_checkpoint(tmp_path / "one" / f"model.ckpt-{STEPS}")
    for run in ("two", "resumed", "two_acc"):
        got = _read_checkpoint(tmp_path / run / f"model.ckpt-{STEPS}")
        assert set(got) == set(want)
        assert got["global_step"] == STEPS
        for k in want:
            np.testing.assert_allclose(got[k], want[k], atol=1e-5, err_msg=f"{run}: {k}")


    # run_inference keeps example order across replicas, including a batch of 1 (one replica
    # gets no rows); outputs match to 1e-6.
    one = dict(np.load(tmp_path / "predict_one.npz"))
    two = dict(np.load(tmp_path / "predict_two.npz"))
    assert sorted(one) == sorted(two) == [
        "is_real_example", "label_ids", "per_example_loss", "predictions"]
    np.testing.assert_array_equal(two["label_ids"], FEATURES["label_ids"][:PREDICT_EXAMPLES])
    assert two["predictions"].shape == (PREDICT_EXAMPLES, 2)
    for k in one:
        np.testing.assert_allclose(two[k], one[k], atol=1e-6, err_msg=k)


# -- MultiWorkerMirroredStrategy: two real processes through the CLI -----------------------------
def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _mrpc_cut(shared: Path, directory: Path, num_train: int = 32, num_dev: int = 16) -> Path:
    directory.mkdir(parents=True)
    for name, n in (("train.tsv", num_train), ("dev.tsv", num_dev)):
        text = (shared / "data" / "glue" / "MRPC" / name).read_text(encoding="utf-8-sig")
        (directory / name).write_text("".join(text.splitlines(True)[:n + 1]), encoding="utf-8")
    return directory


def _run_workers(root: Path, vocab: Path, output_dirs: list[Path]) -> list[dict]:
    """Runs bert-classify as worker 0 (chief) and worker 1; returns pid, returncode, stderr.

    Worker 1 runs with umask 077, the chief with 022: a file worker 1 created would be the only
    kind not readable by others. Its temp dir is its own, to see that it cleans up.
    """
    data = root / "MRPC"
    if not data.is_dir():
        _mrpc_cut(require_shared(), data)
    config = root / "bert_config.json"
    config.write_text(json.dumps(dict(TINY_CONFIG, vocab_size=30522, num_hidden_layers=2)))
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = []
    for index, output_dir in enumerate(output_dirs):
        tmp = root / f"tmp{index}"
        tmp.mkdir(exist_ok=True)
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        cmd = [sys.executable, "-m", "bert_finetune.cli.classify", "--task_name=MRPC",
               "--do_train=true", "--do_eval=true", f"--data_dir={data}",
               f"--vocab_file={vocab}", f"--bert_config_file={config}", "--max_seq_length=32",
               "--train_batch_size=8", "--eval_batch_size=8", "--num_train_epochs=1",
               "--save_checkpoints_steps=2", "--gradient_accumulation_steps=2",
               f"--output_dir={output_dir}"]
        log = open(root / f"worker{index}.log", "w+")  # a file: a full pipe would stall a worker
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=_env(TF_CONFIG=json.dumps(tf_config), TMPDIR=str(tmp)),
                                umask=0o077 if index else 0o022)
        procs.append((proc, log))
    deadline = time.monotonic() + TIMEOUT
    results = []
    try:
        for proc, _ in procs:
            proc.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        for proc, _ in procs:
            proc.kill()
            proc.wait()
    for index, (proc, log) in enumerate(procs):
        log.seek(0)
        results.append({"pid": proc.pid, "returncode": proc.returncode, "log": log.read(),
                        "tmp": root / f"tmp{index}"})
        log.close()
    return results


def _describe(results: list[dict]) -> str:
    return "\n".join(f"--- worker {i} (exit {r['returncode']}):\n{_tail(r['log'])}"
                     for i, r in enumerate(results))


@pytest.fixture(scope="module")
def multi_worker(tmp_path_factory, minilm_weights):
    root = tmp_path_factory.mktemp("multi_worker")
    vocab = minilm_weights / "all-MiniLM-L6-v2" / "vocab.txt"
    out = root / "out"
    return root, vocab, out, _run_workers(root, vocab, [out, out])


def test_multi_worker_training(multi_worker):
    """2 workers, one process each, same --output_dir: 4 steps (each replica's 4 examples as 2
    accumulated micro-batches of 2); only the chief writes."""
    _, _, out, results = multi_worker
    assert [r["returncode"] for r in results] == [0, 0], _describe(results)
    chief, worker = results
    for r in results:
        assert "Training on 2 replica(s) (MultiWorkerMirroredStrategy)" in r["log"], _describe(
            results)
        assert ("Gradient accumulation: 2 micro-batches of 2 examples per replica (2 replica(s))"
                in r["log"]), _describe(results)

    assert (out / "eval_results.txt").is_file()
    assert "global_step = 4\n" in (out / "eval_results.txt").read_text()
    assert tf.train.latest_checkpoint(str(out)) == str(out / "model.ckpt-4")
    assert sorted(p.name for p in out.glob("model.ckpt-*.index")) == [
        "model.ckpt-2.index", "model.ckpt-4.index"]
    assert _read_checkpoint(out / "model.ckpt-4")["global_step"] == 4
    assert chief["log"].count("Saved checkpoint") == 2

    # Nothing in output_dir comes from worker 1: no file carries its umask (077), the one
    # events files (train, and eval/) are the chief's (their names hold the writer's pid), and
    # it saved nothing.
    listing = sorted(p for p in out.rglob("*") if p.is_file())
    assert [p.name for p in listing if p.stat().st_mode & 0o044 != 0o044] == []
    events = [p for p in listing if p.name.startswith("events.out.tfevents.")]
    assert sorted(p.parent.name for p in events) == sorted([out.name, "eval"]), events
    assert all(f".{chief['pid']}." in p.name for p in events), events
    assert not any(str(worker["pid"]) in p.name for p in listing)
    assert "Saved checkpoint" not in worker["log"]
    assert "Eval results" not in worker["log"]
    # Worker 1 wrote its records under its own temp dir and removed them.
    assert list(worker["tmp"].iterdir()) == []


def test_workers_must_share_output_dir(multi_worker, tmp_path):
    """Workers that would resume from different steps stop with one line, instead of hanging."""
    _, vocab, out, first = multi_worker
    assert [r["returncode"] for r in first] == [0, 0], _describe(first)
    chief_dir, worker_dir = tmp_path / "chief", tmp_path / "worker"
    chief_dir.mkdir()
    for f in out.glob("model.ckpt-2.*"):
        shutil.copy(f, chief_dir)
    (chief_dir / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-2"\n')
    shutil.copytree(out.parent / "MRPC", tmp_path / "MRPC")
    results = _run_workers(tmp_path, vocab, [chief_dir, worker_dir])
    assert [r["returncode"] for r in results] == [1, 1], _describe(results)
    for r in results:
        last = r["log"].strip().splitlines()[-1]
        assert last.startswith("bert-classify: error: --output_dir=") and (
            "would resume from different steps [0, 2]" in last), _describe(results)
    assert not list(chief_dir.glob("model.ckpt-4.*"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["parity"]:
        _parity_main(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} parity ROOT")
