"""Task-agnostic train / inference loops on tf.distribute, with original-name checkpoints.

A *task* is any object with
  `variables_by_name() -> {original name: tf.Variable}` (every trainable variable),
  `per_example_loss(features, training) -> [B] float32`, and
  `predict(features) -> {name: [B, ...] tensor}` (no dropout).
It must be built under `strategy.scope()`. How TPUEstimator's concepts map here:
`model_fn` -> the task; `iterations_per_loop` -> steps run inside one `tf.function` call;
`RunConfig.save_checkpoints_steps` -> `TrainOptions.save_checkpoints_steps`; checkpoints keep
TPUEstimator's `model.ckpt-N` files and variable names.

Progress: on TPU one line per loop, as TPUEstimator. Elsewhere a loop is also cut at every
`log_every_n_steps` step and after `log_every_secs`, so that a progress line (step, loss, lr,
examples/s, ETA) comes at least that often whatever `iterations_per_loop` is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf
from absl import logging

from bert_finetune import batch_branches, checkpoints, inference_weights, optimization, xla_kernels
from bert_finetune.errors import UserError
from bert_finetune.progress import Progress, hms
from bert_finetune.runner import branches, xla
from bert_finetune.runner.distribute import is_chief, is_tpu, strategy_name

# dataset_fn(input_context, skip_batches) -> this input pipeline's per-replica batches, its first
# skip_batches dropped (see Trainer.make_iterator).
DatasetFn = Callable[[tf.distribute.InputContext, int], tf.data.Dataset]


@dataclasses.dataclass
class TrainOptions:
    output_dir: str
    train_batch_size: int  # global batch size, over all replicas
    num_train_steps: int
    num_warmup_steps: int
    learning_rate: float
    save_checkpoints_steps: int = 1000
    iterations_per_loop: int = 1000
    keep_checkpoint_max: int = 5
    init_checkpoint: str | None = None
    use_xla: bool = False
    # XLA kernels inside the uncompiled step: the element-wise chains fused
    # (bert_finetune.fused) and the dense layers' weight gradients where measured faster
    # (bert_finetune.weight_gradients); the per-device default is runner.xla.training_kernels_xla.
    xla_kernels: bool = False
    # Each replica's batch runs as this many independent row slices side by side
    # (bert_finetune.batch_branches); the per-device default is runner.branches.batch_branches.
    # With gradient accumulation, each micro-batch runs in slices.
    batch_branches: int = 1
    clip_norm: float = 1.0
    # float16 activations: scale the loss so small gradients survive; halve the scale and skip
    # the update on overflow, double it after `loss_scale_period` good steps.
    dynamic_loss_scale: bool = False
    initial_loss_scale: float = 2.0 ** 15
    loss_scale_period: int = 2000
    optimizer: str = "adamw"  # or "lamb" (optimization.create_optimizer)
    # Off TPU: a progress line at least every log_every_n_steps steps and every log_every_secs
    # seconds (0 = no such bound). Under MultiWorkerMirroredStrategy the time bound is off: all
    # workers must run the same number of steps per call.
    log_every_n_steps: int = 100
    log_every_secs: float = 30.0
    # Each replica's batch is cut into this many micro-batches whose gradients are summed before
    # the (single) clip and update: one step on the whole batch, with the activation memory of
    # one micro-batch. train_batch_size stays the whole batch (the recipe's).
    gradient_accumulation_steps: int = 1


def _summary_writer(directory: str, chief: bool):
    return tf.summary.create_file_writer(directory) if chief else tf.summary.create_noop_writer()


class Trainer:
    """Trains a task with AdamWeightDecay; checkpoints as `model.ckpt-N`; resumes automatically.

    Under MultiWorkerMirroredStrategy every worker runs the same loop; only the chief writes
    checkpoints and summaries, and `output_dir` must be storage every worker sees (as with
    Estimator's model_dir) so that all of them resume from the same step.
    """

    def __init__(self, strategy: tf.distribute.Strategy, task, options: TrainOptions):
        self.strategy = strategy
        self.task = task
        self.options = options
        self.chief = is_chief(strategy)
        accumulate = options.gradient_accumulation_steps
        if accumulate < 1 or options.train_batch_size % (
                accumulate * strategy.num_replicas_in_sync):
            raise UserError(f"--gradient_accumulation_steps={accumulate} must be positive and "
                            f"divide each replica's share of --train_batch_size="
                            f"{options.train_batch_size} ({strategy.num_replicas_in_sync} "
                            "replica(s))")
        self._variables = task.variables_by_name()
        with strategy.scope():
            # The running gradient sums of accumulation: one per replica (sync on read), not
            # checkpointed. (Sums carried as while-loop tensors broke with the batch slices:
            # Grappler merged them into an AccumulateNV2 that failed at run time, tensorflow#23780.)
            self._accumulators = [] if accumulate == 1 else [
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                            synchronization=tf.VariableSynchronization.ON_READ,
                            aggregation=tf.VariableAggregation.SUM, name=f"accumulated/{name}")
                for name, v in self._variables.items()]
            self.global_step = tf.Variable(
                0, dtype=tf.int64, name="global_step", trainable=False,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self.optimizer = optimization.create_optimizer(
                self._variables, options.learning_rate, options.num_train_steps,
                options.num_warmup_steps, options.optimizer)
            if options.dynamic_loss_scale:
                first = tf.VariableAggregation.ONLY_FIRST_REPLICA
                self.loss_scale = tf.Variable(options.initial_loss_scale, dtype=tf.float32,
                                              name="loss_scale", trainable=False,
                                              aggregation=first)
                self.good_steps = tf.Variable(0, dtype=tf.int64, name="loss_scale_good_steps",
                                              trainable=False, aggregation=first)
        saved = dict(self._variables)
        saved.update(self.optimizer.slot_variables())
        saved["global_step"] = self.global_step
        if options.dynamic_loss_scale:
            saved["loss_scale"] = self.loss_scale
            saved["loss_scale_good_steps"] = self.good_steps
        self.saver = checkpoints.CheckpointSaver(saved, max_to_keep=options.keep_checkpoint_max)
        # `train_steps(iterator, num_steps[, max_secs])` runs num_steps steps in one tf.function
        # call (one trace: num_steps is a tensor), fewer if max_secs (a float64 tensor) have
        # passed, and returns their mean loss.
        self.train_steps = self._build_loop()
        # (global_step, mean loss) after each train_steps call of the last `train`.
        self.history: list[tuple[int, float]] = []

    # -- state -------------------------------------------------------------------------------
    def restore_or_initialize(self) -> int:
        """Resumes from the latest checkpoint in output_dir, else initialises from init_checkpoint.

        Returns the global step to continue from.
        """
        latest = tf.train.latest_checkpoint(self.options.output_dir)
        if latest:
            logging.info("Resuming from %s", latest)
            self.saver.restore(latest)
        elif self.options.init_checkpoint:
            checkpoints.init_from_checkpoint(self._variables, self.options.init_checkpoint)
        start = int(self.global_step.numpy())
        self._check_workers_agree(start)
        return start

    def _check_workers_agree(self, start: int) -> None:
        """Fails loudly, on every worker, when workers would resume from different steps.

        That happens when output_dir is not shared; left alone the workers would run different
        numbers of collective steps and hang.
        """
        if not isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return
        strategy = self.strategy
        local = tf.constant([start], tf.int64)

        @tf.function
        def gather_steps():
            return strategy.gather(strategy.run(tf.identity, args=(local,)), axis=0)

        steps = sorted(set(gather_steps().numpy().tolist()))
        if len(steps) > 1:
            raise UserError(f"--output_dir={self.options.output_dir}: the workers would resume "
                            f"from different steps {steps}; output_dir must be a directory every "
                            "worker sees (shared storage)")

    # -- the step ----------------------------------------------------------------------------
    def _build_loop(self):
        strategy, task, opts = self.strategy, self.task, self.options
        names = list(self._variables)
        variables = [self._variables[n] for n in names]
        batch = float(opts.train_batch_size)

        scaling = opts.dynamic_loss_scale
        def grads_fn(features, scale):
            with (tf.GradientTape() as tape, xla_kernels.enabled(opts.xla_kernels),
                  batch_branches.enabled(opts.batch_branches)):
                per_example = task.per_example_loss(features, training=True)  # [b]
                # Sum over this replica / global batch: summed over replicas it is the mean loss.
                loss = tf.reduce_sum(per_example) / batch
                scaled = loss * scale if scaling else loss
            grads = tape.gradient(scaled, variables)
            return loss, [tf.convert_to_tensor(g) if g is not None else tf.zeros_like(v)
                          for g, v in zip(grads, variables, strict=True)]

        if opts.use_xla and not is_tpu(strategy):  # TPU compiles everything anyway
            grads_fn = tf.function(grads_fn, jit_compile=True)

        accumulate = opts.gradient_accumulation_steps

        def accumulated_grads_fn(features, scale):
            """grads_fn over `accumulate` micro-batches of the batch, one after the other.

            Each micro-batch's loss is already divided by the whole batch size, so the sums are
            the loss and gradient of the whole batch; only one micro-batch's activations are
            alive at a time (parallel_iterations=1). Each gradient is added to its replica's
            accumulator variable as soon as it is computed (and then freed).
            """
            micro = tf.nest.map_structure(lambda t: _split_batch(t, accumulate), features)
            for a in self._accumulators:
                a.assign(tf.zeros_like(a), read_value=False)

            def body(i, loss_sum):
                loss, grads = grads_fn(tf.nest.map_structure(lambda t: t[i], micro), scale)
                added = [a.assign_add(g, read_value=False)
                         for a, g in zip(self._accumulators, grads, strict=True)]
                with tf.control_dependencies(added):
                    return i + 1, loss_sum + loss

            _, loss = tf.while_loop(lambda i, *_: i < accumulate, body,
                                    (tf.constant(0), tf.constant(0.0)), parallel_iterations=1)
            with tf.control_dependencies([loss]):
                return loss, [a.read_value() for a in self._accumulators]

        def step_fn(features):
            scale = tf.identity(self.loss_scale) if scaling else tf.constant(1.0)
            if accumulate > 1:
                loss, grads = accumulated_grads_fn(features, scale)
            else:
                loss, grads = grads_fn(features, scale)
            ctx = tf.distribute.get_replica_context()
            # Clip the aggregated gradient: N replicas behave as one with the same global batch.
            grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
            skip = None
            if scaling:
                grads = [g / scale for g in grads]
                finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
                grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
                skip = tf.logical_not(finite)
                self._update_loss_scale(finite)
            grads, _ = tf.clip_by_global_norm(grads, opts.clip_norm)
            self.optimizer.apply_gradients(list(zip(grads, names, strict=True)),
                                           self.global_step, skip=skip)
            return loss

        def one_step(iterator):
            per_replica = strategy.run(step_fn, args=(next(iterator),))
            self.global_step.assign_add(1)
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        @tf.function
        def train_steps(iterator, num_steps, max_secs=None):
            total, done = tf.constant(0.0), tf.constant(0)
            if max_secs is None:
                for _ in tf.range(num_steps):
                    total += one_step(iterator)
                    done += 1
            else:
                began = tf.timestamp()
                for _ in tf.range(num_steps):
                    # The clock read before the first step: nothing else orders it (a loop
                    # invariant is not waited for when the loop starts, and a busy CPU ran it late).
                    with tf.control_dependencies([began]):
                        loss = one_step(iterator)
                    total += loss
                    done += 1
                    with tf.control_dependencies([loss]):  # the clock read after the step
                        now = tf.timestamp()
                    if now - began >= max_secs:
                        break
            return total / tf.cast(done, tf.float32)

        return train_steps

    def _update_loss_scale(self, finite: tf.Tensor) -> None:
        """Halves the loss scale on overflow; doubles it after a period of finite gradients."""
        good = tf.where(finite, self.good_steps + 1, tf.zeros_like(self.good_steps))
        grow = good >= self.options.loss_scale_period
        scale = tf.where(finite, tf.where(grow, self.loss_scale * 2.0, self.loss_scale),
                         tf.maximum(self.loss_scale / 2.0, 1.0))
        self.loss_scale.assign(scale)
        self.good_steps.assign(tf.where(grow, tf.zeros_like(good), good))

    def make_iterator(self, dataset_fn: DatasetFn, start_step: int = 0):
        """The distributed iterator of `dataset_fn`'s batches, positioned after start_step steps.

        `dataset_fn(input_context, skip_batches)` returns this input pipeline's per-replica
        batches with its first `skip_batches` batches dropped. A pipeline feeds
        num_replicas_in_sync / num_input_pipelines replicas, one batch each per step.
        """
        def per_pipeline(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_step = ctx.num_replicas_in_sync // ctx.num_input_pipelines
            return dataset_fn(ctx, start_step * per_step)

        dist = self.strategy.distribute_datasets_from_function(per_pipeline)
        if is_tpu(self.strategy):
            _require_static_shapes(dist.element_spec)
        elif self.options.use_xla:  # XLA compiles once per shape: a few bucket lengths are fine
            _require_static_shapes(dist.element_spec, batch_only=True)
        return iter(dist)

    def train(self, dataset_fn: DatasetFn) -> dict[str, float]:
        """Trains until `num_train_steps`; `dataset_fn` as in `make_iterator`.

        Returns {"global_step", "loss"}; "loss" is the mean loss of the last loop.
        """
        opts = self.options
        start = self.restore_or_initialize()
        self.history = []
        if start >= opts.num_train_steps:
            logging.info("Training already complete: the checkpoint in %s is at step %d of %d; "
                         "nothing to train.", opts.output_dir, start, opts.num_train_steps)
            return {"global_step": start, "loss": float("nan")}
        if start:
            logging.info("Continuing training at step %d of %d", start, opts.num_train_steps)
        logging.info("Training on %d replica(s) (%s)", self.strategy.num_replicas_in_sync,
                     strategy_name(self.strategy))
        iterator = self.make_iterator(dataset_fn, start)
        writer = _summary_writer(opts.output_dir, self.chief)
        step, loss = start, float("nan")
        # Off TPU a loop also ends at each log step and after log_every_secs (see the module doc).
        off_tpu = not is_tpu(self.strategy)
        by_steps = off_tpu and opts.log_every_n_steps > 0
        timed = off_tpu and opts.log_every_secs > 0 and not isinstance(
            self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        max_secs = tf.constant(opts.log_every_secs, tf.float64) if timed else None
        began = time.time()
        while step < opts.num_train_steps:
            next_save = (step // opts.save_checkpoints_steps + 1) * opts.save_checkpoints_steps
            n = min(opts.iterations_per_loop, next_save - step, opts.num_train_steps - step)
            if by_steps:
                n = min(n, (step // opts.log_every_n_steps + 1) * opts.log_every_n_steps - step)
            t0 = time.time()
            loss = float(self.train_steps(iterator, tf.constant(n, tf.int32), max_secs).numpy())
            elapsed = time.time() - t0
            done, step = int(self.global_step.numpy()) - step, int(self.global_step.numpy())
            self.history.append((step, loss))
            examples_per_sec = done * opts.train_batch_size / max(elapsed, 1e-9)
            rate = (step - start) / max(time.time() - began, 1e-9)
            eta = (opts.num_train_steps - step) / max(rate, 1e-9)
            lr = float(self.optimizer.learning_rate_at(step - 1).numpy())
            logging.info("step %d/%d  loss = %.5f  lr = %.3g  examples/sec = %.1f  ETA %s",
                         step, opts.num_train_steps, loss, lr, examples_per_sec, hms(eta))
            with writer.as_default(step=step):
                tf.summary.scalar("loss", loss)
                tf.summary.scalar("learning_rate", lr)
                tf.summary.scalar("examples/sec", examples_per_sec)
                tf.summary.scalar("global_step/sec", done / max(elapsed, 1e-9))
            if step % opts.save_checkpoints_steps == 0 or step >= opts.num_train_steps:
                self.save(step)
        writer.flush()
        return {"global_step": step, "loss": loss}

    def save(self, step: int) -> None:
        if self.chief:
            self.saver.save(self.options.output_dir, step)


def _split_batch(t: tf.Tensor, n: int) -> tf.Tensor:
    """[B, ...] -> [n, B / n, ...], keeping every static dimension."""
    b = t.shape[0]
    if b is not None and b % n:
        raise ValueError(f"gradient_accumulation_steps={n} does not divide the per-replica "
                         f"batch of {b} examples")
    m = b // n if b is not None else tf.shape(t)[0] // n
    rest = [d if d is not None else tf.shape(t)[k + 1] for k, d in enumerate(t.shape[1:])]
    return tf.reshape(t, [n, m, *rest])


def _require_static_shapes(element_spec, batch_only: bool = False) -> None:
    """XLA and TPU want every batch the same shape: batch with drop_remainder=True.

    batch_only: only the batch dimension must be static (XLA off TPU, length buckets).
    """
    for spec in tf.nest.flatten(element_spec, expand_composites=True):
        if not isinstance(spec, tf.TensorSpec):
            continue
        shape = spec.shape[:1] if batch_only and spec.shape.rank else spec.shape
        if not shape.is_fully_defined():
            raise ValueError(f"use_xla / TPU training needs static shapes, but a batch has shape "
                             f"{spec.shape}: batch the dataset with drop_remainder=True")


def restore_for_inference(variables: dict[str, tf.Variable], output_dir: str,
                          init_checkpoint: str | None, encoder_source: str | None = None) -> int:
    """Loads the latest fine-tuned checkpoint of output_dir, else init_checkpoint (encoder only).

    `encoder_source` names where the encoder's weights already came from (a module), for the
    message when neither checkpoint exists.

    Returns the global step of the checkpoint used (0 for init_checkpoint / fresh weights).
    """
    latest = tf.train.latest_checkpoint(output_dir) if tf.io.gfile.isdir(output_dir) else None
    if latest:
        logging.info("Using fine-tuned checkpoint %s", latest)
        checkpoints.init_from_checkpoint(variables, latest, required=list(variables))
        ckpt = checkpoints.reader(latest)
        if ckpt.has_tensor("global_step"):
            return int(ckpt.get_tensor("global_step"))
        return 0
    if init_checkpoint:
        logging.warning("No fine-tuned checkpoint in %s: predicting with %s and an untrained "
                        "head", output_dir, init_checkpoint)
        checkpoints.init_from_checkpoint(variables, init_checkpoint)
    elif encoder_source:
        logging.warning("No fine-tuned checkpoint in %s: predicting with the encoder of %s and "
                        "an untrained head", output_dir, encoder_source)
    else:
        logging.warning("No checkpoint at all: predicting with random weights")
    return 0


def run_inference(strategy: tf.distribute.Strategy, task, dataset: tf.data.Dataset,
                  progress: Callable[[int], None] | None = None,
                  num_examples: int | None = None, what: str = "Inference",
                  use_xla: bool = False, kernels: bool | None = None) -> dict[str, np.ndarray]:
    """Runs `task.predict` on every batch of `dataset` (global batches, in order).

    Batches are split across replicas in order and gathered back, so row i of every output
    is example i. Under MultiWorkerMirroredStrategy each worker runs it locally. A run longer
    than a few seconds logs `what`'s progress (with an ETA when `num_examples` is given);
    `progress(batches_done)` is also called after every batch. `use_xla` compiles `task.predict`
    with XLA (once per batch shape; see runner.xla for when that pays); `kernels` runs its
    element-wise chains as XLA kernels when it is not compiled (None: the per-device default).
    """
    chunks: list[dict[str, np.ndarray]] = []
    shown = Progress(what, num_examples)
    for chunk in iter_inference(strategy, task, dataset, use_xla, kernels):
        chunks.append(chunk)
        shown.advance(len(next(iter(chunk.values()))) if chunk else 0)
        if progress is not None:
            progress(len(chunks))
    shown.finish()
    if not chunks:
        return {}
    return {k: np.concatenate([c[k] for c in chunks], axis=0) for k in chunks[0]}


def inference_dataset_options(multi_worker: bool) -> tf.data.Options:
    """The options of an inference pass's input: in order, whole (not sharded, except across
    workers), and without tf.data's autotuning. Its optimization thread wakes at doubling
    intervals, and destroying the iterator at the end of the data waited for its next wake-up:
    an MRPC dev pass of 10 s ended 10 s later in about a third of runs (TensorFlow 2.21; the
    same pipeline with autotuning off: no wait in 10 passes). Parsing a batch of records needs
    no tuning: the map runs on every core, the prefetch keeps its own buffer."""
    options = tf.data.Options()
    options.autotune.enabled = False
    if not multi_worker:
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def iter_inference(strategy: tf.distribute.Strategy, task, dataset: tf.data.Dataset,
                   use_xla: bool = False, kernels: bool | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
    """`run_inference` one batch at a time: yields each batch's outputs (flat memory)."""
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    dataset = dataset.with_options(inference_dataset_options(multi_worker))
    if not multi_worker:
        dataset = strategy.experimental_distribute_dataset(dataset)
    step = inference_step(strategy, task, use_xla, kernels=kernels)
    for features in dataset:
        yield {k: v.numpy() for k, v in step(features).items()}


def inference_step(strategy: tf.distribute.Strategy, task, use_xla: bool = False,
                   num_branches: int | None = None, kernels: bool | None = None):
    """The tf.function that runs `task.predict` on one global batch and gathers the replicas.

    Under MultiWorkerMirroredStrategy each worker runs its batch locally. With `use_xla` each
    replica's forward pass is compiled by XLA (once per batch shape), not the gather. The
    encoder runs each replica's batch as `num_branches` slices side by side (None: the
    per-device default, runner.branches), its element-wise chains as XLA kernels if `kernels`
    (bert_finetune.fused; None: the per-device default, runner.xla.inference_kernels_xla).
    """
    if num_branches is None:
        num_branches = branches.batch_branches(strategy)[0]
    if kernels is None:
        kernels = xla.inference_kernels_xla(None, use_xla, strategy)[0]

    # bfloat16 encoder kernels cast (and transposed) once for the run, not in every step.
    copies = inference_weights.prepare(task) if kernels else None

    def predict_in_branches(features):
        with batch_branches.enabled(num_branches), xla_kernels.enabled(
                kernels, weight_gradients=False, forward_only=True), inference_weights.using(
                copies):
            return task.predict(features)

    predict = (tf.function(predict_in_branches, jit_compile=True) if use_xla
               else predict_in_branches)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return tf.function(predict, reduce_retracing=True)

    # reduce_retracing: batches padded to a few bucket lengths share one generic trace.
    @tf.function(reduce_retracing=True)
    def step(features):
        outputs = strategy.run(predict, args=(features,))
        return tf.nest.map_structure(
            lambda t: tf.concat(strategy.experimental_local_results(t), axis=0), outputs)

    return step
