"""The original BERT optimizer (AdamWeightDecay) and its learning-rate schedule, in plain TF2.

Same update as google-research/bert `optimization.py`: Adam *without* bias correction, decoupled
weight decay (LayerNorm and bias excluded), linear warmup then linear decay to zero, and a
global-norm clip of 1.0. Slots keep the original checkpoint names `<var>/adam_m`, `<var>/adam_v`.

The optimizer is a `tf.Module` over `tf.Variable`s (no Keras). It runs eagerly, inside
`tf.function`, and under any `tf.distribute` strategy: `apply_gradients` called in a replica
context hands the (already aggregated) gradients to `merge_call` and updates each copy of a
mirrored variable with `strategy.extended.update` — the pattern Keras 2's OptimizerV2 used.

`LAMB` (layer-wise trust ratios, for the large batches of multi-worker/TPU pretraining) sits
beside it with the same decay exclusions; `create_optimizer(..., optimizer_type="lamb")`.

Unlike the original, which clipped each TPU shard's gradient on its own, the caller clips the
*aggregated* gradient, so that N replicas give the same result as one replica on the global batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import tensorflow as tf

from bert_finetune.errors import UserError

_SLOT_NAMES = ("adam_m", "adam_v")


def _check_schedule(num_train_steps: int, num_warmup_steps: int) -> None:
    # A zero step count would silently give a NaN learning rate (0/0) in the original.
    if int(num_train_steps) <= 0:
        raise UserError(
            f"num_train_steps must be positive, got {num_train_steps} (check --num_train_epochs, "
            "--train_batch_size and the size of the training set)"
        )
    if int(num_warmup_steps) < 0:
        raise UserError(
            f"num_warmup_steps must not be negative, got {num_warmup_steps} "
            "(check --warmup_proportion)"
        )


def learning_rate_at(
    global_step: tf.Tensor | int, init_lr: float, num_train_steps: int, num_warmup_steps: int
) -> tf.Tensor:
    """The original's learning rate for `global_step` (counted from 0): a float32 scalar.

    `polynomial_decay(init_lr, step, num_train_steps, end_learning_rate=0, power=1, cycle=False)`
    (the step clipped at `num_train_steps`), replaced by `init_lr * step / num_warmup_steps` while
    `step < num_warmup_steps`. Written with the original's ops so float32 rounding matches.
    """
    _check_schedule(num_train_steps, num_warmup_steps)
    init = tf.constant(init_lr, dtype=tf.float32)
    end = tf.constant(0.0, dtype=tf.float32)
    step = tf.cast(global_step, tf.float32)
    decay_steps = tf.constant(float(num_train_steps), dtype=tf.float32)
    p = tf.minimum(step, decay_steps) / decay_steps
    learning_rate = (init - end) * tf.pow(1.0 - p, 1.0) + end
    if num_warmup_steps:
        global_steps_int = tf.cast(global_step, tf.int32)
        warmup_steps_int = tf.constant(num_warmup_steps, dtype=tf.int32)
        warmup_percent_done = tf.cast(global_steps_int, tf.float32) / tf.cast(
            warmup_steps_int, tf.float32
        )
        warmup_learning_rate = init_lr * warmup_percent_done
        is_warmup = tf.cast(global_steps_int < warmup_steps_int, tf.float32)
        learning_rate = (1.0 - is_warmup) * learning_rate + is_warmup * warmup_learning_rate
    return learning_rate


def clip_gradients(
    grads: list[tf.Tensor | None], clip_norm: float = 1.0
) -> tuple[list[tf.Tensor | None], tf.Tensor]:
    """`tf.clip_by_global_norm(grads, clip_norm)`: (clipped grads, global norm before clipping).

    `None` entries (unused variables) pass through as `None`.
    """
    clipped, global_norm = tf.clip_by_global_norm(grads, clip_norm=clip_norm)
    return list(clipped), global_norm


def _variable_name(name: str) -> str:
    """`bert/.../kernel:0` -> `bert/.../kernel` (the original's `_get_variable_name`)."""
    m = re.match(r"^(.*):\d+$", name)
    return m.group(1) if m is not None else name


@tf.function(jit_compile=True)
def _adam_weight_decay_step(param, grad, m, v, learning_rate, step, beta_1: float, beta_2: float,
                            epsilon: float, weight_decay_rate: float, bias_correction: bool):
    """One variable's (new param, new m, new v), float32, as the original computes them.

    Compiled by XLA into one pass over the variable: run as a dozen element-wise TF ops, the
    update read and wrote every variable about ten times (MiniLM-L6's embedding table: 42 ms
    then, 13 ms now). The constants are Python floats, folded in as the original's were. TF's
    `ApplyAdam` kernel is not used: it computes 1 - beta_2 in float32 (0.99998713e-3, not the
    original's 1e-3), which moves every update by ~6e-6 (relative).
    """
    grad = tf.cast(grad, tf.float32)
    param = tf.cast(param, tf.float32)
    next_m = beta_1 * m + (1.0 - beta_1) * grad
    next_v = beta_2 * v + (1.0 - beta_2) * tf.square(grad)
    if bias_correction:  # Adam's (and PyTorch/Keras AdamW's); not the original's
        m_hat = next_m / (1.0 - tf.pow(beta_1, step))
        v_hat = next_v / (1.0 - tf.pow(beta_2, step))
        update = m_hat / (tf.sqrt(v_hat) + epsilon)
    else:
        update = next_m / (tf.sqrt(next_v) + epsilon)
    if weight_decay_rate:
        update += weight_decay_rate * param
    return param - learning_rate * update, next_m, next_v


class AdamWeightDecay(tf.Module):
    """Adam with decoupled weight decay and no bias correction (the original's optimizer).

    Per variable, with g its gradient and lr the scheduled learning rate:
        m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
        update = m / (sqrt(v) + ε) [+ weight_decay_rate·param unless the name matches an exclusion]
        param -= lr · update
    `bias_correction=True` uses m / (1-β1^t) and v / (1-β2^t) (t the 1-based step) as Adam does;
    not the original, which skipped it.

    Create it under `strategy.scope()` so that the slots are mirrored like the variables.
    """

    def __init__(
        self,
        variables: Mapping[str, tf.Variable],
        learning_rate: float,
        num_train_steps: int,
        num_warmup_steps: int,
        weight_decay_rate: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        exclude_from_weight_decay: Iterable[str] | None = ("LayerNorm", "layer_norm", "bias"),
        name: str = "AdamWeightDecay",
        bias_correction: bool = False,
    ):
        super().__init__(name=name)
        _check_schedule(num_train_steps, num_warmup_steps)
        self.learning_rate = float(learning_rate)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps)
        self.weight_decay_rate = float(weight_decay_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.exclude_from_weight_decay = tuple(exclude_from_weight_decay or ())
        self.bias_correction = bool(bias_correction)
        # The dict key, not `.name` (which eager mode suffixes with ":0"), is the checkpoint name.
        self._params = {_variable_name(k): v for k, v in variables.items()}
        self._slots: dict[str, tf.Variable] = {}
        for var_name, var in self._params.items():
            for slot in _SLOT_NAMES:
                slot_name = f"{var_name}/{slot}"
                self._slots[slot_name] = tf.Variable(
                    lambda var=var: tf.zeros(var.shape, dtype=tf.float32),
                    dtype=tf.float32,
                    name=slot_name,
                    trainable=False,
                )

    def slot_variables(self) -> dict[str, tf.Variable]:
        """`{"<name>/adam_m": m, "<name>/adam_v": v, ...}` with the original checkpoint names."""
        return dict(self._slots)

    def learning_rate_at(self, global_step: tf.Tensor | int) -> tf.Tensor:
        """The scheduled learning rate for `global_step` (before its increment)."""
        return learning_rate_at(
            global_step, self.learning_rate, self.num_train_steps, self.num_warmup_steps
        )

    def _do_use_weight_decay(self, param_name: str) -> bool:
        if not self.weight_decay_rate:
            return False
        return not any(re.search(r, param_name) for r in self.exclude_from_weight_decay)

    def apply_gradients(
        self,
        grads_and_names: Sequence[tuple[tf.Tensor | tf.IndexedSlices | None, str]],
        global_step: tf.Variable | tf.Tensor,
        skip: tf.Tensor | None = None,
    ) -> None:
        """Updates the named variables and their slots; does not increment `global_step`.

        `grads_and_names` pairs each gradient (already aggregated over replicas and clipped) with
        the variable's original name; `None` gradients are skipped. `global_step` is the step
        before its increment, as in the original. Works in a replica context (inside
        `strategy.run`), in a cross-replica context and with no strategy at all. `skip`, a bool
        scalar, leaves variables and slots unchanged when True (a float16 step whose scaled
        gradient overflowed); it selects rather than branches, so it compiles for XLA/TPU.
        """
        names: list[str] = []
        grads: list[tf.Tensor] = []
        for grad, raw_name in grads_and_names:
            if grad is None:
                continue
            name = _variable_name(raw_name)
            if name not in self._params:
                raise KeyError(f"no variable named {name!r} in this optimizer")
            names.append(name)
            # Gathers (embedding lookups) give IndexedSlices; the dense update is the original's.
            grads.append(tf.convert_to_tensor(grad))
        if not names:
            return
        learning_rate = self.learning_rate_at(global_step)
        step = tf.cast(global_step, tf.float32) + 1.0  # 1-based: LAMB's bias correction
        keep = None if skip is None else tf.convert_to_tensor(skip, tf.bool)

        def merge_fn(strategy: tf.distribute.Strategy, grads, learning_rate, step, keep) -> None:
            self._distributed_apply(strategy, names, grads, learning_rate, step, keep)

        replica_context = tf.distribute.get_replica_context()
        if replica_context is None:  # cross-replica context, e.g. under strategy.scope()
            self._distributed_apply(tf.distribute.get_strategy(), names, grads, learning_rate,
                                    step, keep)
        else:
            replica_context.merge_call(merge_fn, args=(grads, learning_rate, step, keep))

    def _distributed_apply(
        self,
        strategy: tf.distribute.Strategy,
        names: list[str],
        grads: list,
        learning_rate,
        step,
        keep,
    ) -> None:
        # In the cross-replica context: `update` runs `_apply_one` once per copy of a mirrored
        # variable, handing it that replica's gradient, slots and learning rate. One variable
        # after another (control dependencies): run side by side, every variable's temporaries
        # (new moments, update, new value: several times the model's size) would be alive at once.
        previous: list = []
        for name, grad in zip(names, grads, strict=True):
            with tf.control_dependencies(previous):
                done = strategy.extended.update(
                    self._params[name],
                    self._apply_one,
                    args=(
                        grad,
                        self._slots[f"{name}/adam_m"],
                        self._slots[f"{name}/adam_v"],
                        learning_rate,
                        step,
                        keep,
                        name,
                    ),
                    group=False,
                )
            previous = [op for op in tf.nest.flatten(done) if op is not None]

    def _apply_one(self, param, grad, m, v, learning_rate, step, keep, name: str):
        decay = self.weight_decay_rate if self._do_use_weight_decay(name) else 0.0
        next_param, next_m, next_v = _adam_weight_decay_step(
            param.read_value(), grad, m.read_value(), v.read_value(), learning_rate, step,
            self.beta_1, self.beta_2, self.epsilon, decay, self.bias_correction)
        return self._assign(param, m, v, next_param, next_m, next_v, keep)

    @staticmethod
    def _assign(param, m, v, next_param, next_m, next_v, keep):
        """The three assignments, as one op (what the next variable's update waits for)."""
        if keep is not None:  # an overflowed float16 step: everything stays as it was
            next_param = tf.where(keep, tf.cast(param, tf.float32), next_param)
            next_m = tf.where(keep, m, next_m)
            next_v = tf.where(keep, v, next_v)
        return tf.group(param.assign(tf.cast(next_param, param.dtype)), m.assign(next_m),
                        v.assign(next_v))


class LAMB(AdamWeightDecay):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), as tf-models'.

    Adam moments *with* bias correction, decoupled weight decay, then a per-variable trust
    ratio ||param|| / ||update|| (1 when either norm is 0, or for variables excluded from layer
    adaptation, by default the weight-decay exclusions):
        m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;  m̂ = m / (1-β1^t);  v̂ = v / (1-β2^t)
        update = m̂ / (sqrt(v̂) + ε) [+ weight_decay_rate·param]
        param -= ratio · lr · update
    with t the 1-based step. The slots keep the names `<var>/adam_m`, `<var>/adam_v` (they are
    Adam's moments), so checkpoint converters that skip those names skip them here too.
    """

    def __init__(self, variables: Mapping[str, tf.Variable], learning_rate: float,
                 num_train_steps: int, num_warmup_steps: int, weight_decay_rate: float = 0.01,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-6,
                 exclude_from_weight_decay: Iterable[str] | None = ("LayerNorm", "layer_norm",
                                                                    "bias"),
                 exclude_from_layer_adaptation: Iterable[str] | None = None, name: str = "LAMB"):
        super().__init__(variables, learning_rate, num_train_steps, num_warmup_steps,
                         weight_decay_rate, beta_1, beta_2, epsilon, exclude_from_weight_decay,
                         name=name)
        self.exclude_from_layer_adaptation = (
            self.exclude_from_weight_decay if exclude_from_layer_adaptation is None
            else tuple(exclude_from_layer_adaptation))

    def _do_layer_adaptation(self, param_name: str) -> bool:
        return not any(re.search(r, param_name) for r in self.exclude_from_layer_adaptation)

    def _apply_one(self, param, grad, m, v, learning_rate, step, keep, name: str):
        grad = tf.cast(grad, tf.float32)
        p = tf.cast(param, tf.float32)
        next_m = self.beta_1 * m + (1.0 - self.beta_1) * grad
        next_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(grad)
        m_hat = next_m / (1.0 - tf.pow(self.beta_1, step))
        v_hat = next_v / (1.0 - tf.pow(self.beta_2, step))
        update = m_hat / (tf.sqrt(v_hat) + self.epsilon)
        if self._do_use_weight_decay(name):
            update += self.weight_decay_rate * p
        ratio = tf.constant(1.0)
        if self._do_layer_adaptation(name):
            w_norm = tf.norm(p, ord=2)
            g_norm = tf.norm(update, ord=2)
            ratio = tf.where(w_norm > 0.0,
                             tf.where(g_norm > 0.0, w_norm / tf.maximum(g_norm, 1e-30), 1.0),
                             1.0)
        next_param = p - ratio * learning_rate * update
        return self._assign(param, m, v, next_param, next_m, next_v, keep)


# adamw: the original's AdamWeightDecay; adamw_bc: the same with Adam's bias correction (what
# PyTorch's and Keras' AdamW do); lamb: LAMB for large-batch pretraining.
OPTIMIZERS = ("adamw", "adamw_bc", "lamb")


def create_optimizer(
    variables: Mapping[str, tf.Variable],
    init_lr: float,
    num_train_steps: int,
    num_warmup_steps: int,
    optimizer_type: str = "adamw",
) -> AdamWeightDecay:
    """The original's optimizer settings: weight decay 0.01, β 0.9/0.999, ε 1e-6, LayerNorm/bias
    excluded. Call under `strategy.scope()`; clip with `clip_gradients` before `apply_gradients`.

    `optimizer_type="lamb"` gives `LAMB` with the same settings and exclusions (tf-models');
    `"adamw_bc"` gives AdamWeightDecay with Adam's bias correction.
    """
    if optimizer_type not in OPTIMIZERS:
        raise UserError(f"--optimizer={optimizer_type}: use one of {', '.join(OPTIMIZERS)}")
    cls = LAMB if optimizer_type == "lamb" else AdamWeightDecay
    return cls(
        variables,
        learning_rate=init_lr,
        num_train_steps=num_train_steps,
        num_warmup_steps=num_warmup_steps,
        weight_decay_rate=0.01,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"],
        **({"bias_correction": True} if optimizer_type == "adamw_bc" else {}),
    )
