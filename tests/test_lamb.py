"""LAMB: one and two steps against updates computed by hand (numpy), decay exclusions kept."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bert_finetune import optimization
from bert_finetune.errors import UserError


def _lamb_by_hand(param, m, v, grad, t, lr, decay, adapt, b1=0.9, b2=0.999, eps=1e-6,
                  wd=0.01):
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad ** 2
    update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    if decay:
        update = update + wd * param
    ratio = 1.0
    if adapt:
        w_norm, g_norm = np.linalg.norm(param), np.linalg.norm(update)
        ratio = w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
    return param - ratio * lr * update, m, v


def test_lamb_steps_equal_hand_computed_updates():
    rng = np.random.default_rng(0)
    kernel0 = rng.normal(size=(3, 2)).astype(np.float64)
    bias0 = np.array([0.5, -0.25])
    variables = {"layer/dense/kernel": tf.Variable(kernel0.astype(np.float32)),
                 "layer/dense/bias": tf.Variable(bias0.astype(np.float32))}
    # 2 train steps, no warmup: lr = 0.1 * (1 - step / 2) -> 0.1 then 0.05.
    opt = optimization.create_optimizer(variables, 0.1, 2, 0, optimizer_type="lamb")
    assert isinstance(opt, optimization.LAMB)
    assert set(opt.slot_variables()) == {"layer/dense/kernel/adam_m", "layer/dense/kernel/adam_v",
                                         "layer/dense/bias/adam_m", "layer/dense/bias/adam_v"}
    grads = [{"layer/dense/kernel": rng.normal(size=(3, 2)), "layer/dense/bias": np.array(
        [0.3, -2.0])} for _ in range(2)]
    state = {"layer/dense/kernel": (kernel0, 0.0, 0.0), "layer/dense/bias": (bias0, 0.0, 0.0)}
    for step, (g, lr) in enumerate(zip(grads, (0.1, 0.05), strict=True)):
        opt.apply_gradients([(tf.constant(g[n], tf.float32), n) for n in variables],
                            tf.constant(step, tf.int64))
        for name in variables:
            # The bias is excluded from weight decay and from layer adaptation.
            is_kernel = name.endswith("kernel")
            state[name] = _lamb_by_hand(*state[name], g[name], step + 1, lr, is_kernel,
                                        is_kernel)
            np.testing.assert_allclose(variables[name].numpy(), state[name][0], rtol=1e-5,
                                       atol=1e-6)
            np.testing.assert_allclose(opt.slot_variables()[name + "/adam_m"].numpy(),
                                       state[name][1], rtol=1e-5, atol=1e-7)
    # The trust ratio made a difference: plain bias-corrected Adam would move the kernel by
    # lr * ~1 per entry in the first step; LAMB scales it by ||w|| / ||update||.
    first = _lamb_by_hand(kernel0, 0.0, 0.0, grads[0]["layer/dense/kernel"], 1, 0.1, True, False)
    assert not np.allclose(first[0], _lamb_by_hand(kernel0, 0.0, 0.0,
                                                   grads[0]["layer/dense/kernel"], 1, 0.1, True,
                                                   True)[0])


def test_unknown_optimizer_is_a_user_error():
    with pytest.raises(UserError, match="--optimizer=sgd"):
        optimization.create_optimizer({"w": tf.Variable([1.0])}, 0.1, 2, 0, optimizer_type="sgd")
