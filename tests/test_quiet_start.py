"""A CPU-only machine starts a command without TensorFlow's CUDA error line; nothing else hidden."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bert_finetune.cli import devices

_LINE = ("E0000 00:00:1 12 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
         "Failed call to cuInit: UNKNOWN ERROR (303)\n")
_OTHER = "W0000 00:00:1 12 something.cc:1] a warning the user needs\n"


def test_only_the_no_driver_line_is_dropped_and_only_when_no_gpu_was_asked_for():
    text = _OTHER + _LINE + _OTHER
    assert devices.filter_probe_output(text, driver_present=False, requested=False) == _OTHER * 2
    # A driver is installed (a GPU present but unusable) or the user asked for a GPU: all kept.
    assert devices.filter_probe_output(text, driver_present=True, requested=False) == text
    assert devices.filter_probe_output(text, driver_present=False, requested=True) == text
    assert devices.gpu_requested({"CUDA_VISIBLE_DEVICES": "0"})
    assert not devices.gpu_requested({"CUDA_VISIBLE_DEVICES": ""})
    assert not devices.gpu_requested({"CUDA_VISIBLE_DEVICES": "-1"})
    assert not devices.gpu_requested({})


def test_a_command_starts_without_cuda_error_lines_on_this_cpu_only_machine(tmp_path):
    if devices.nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL")}
    # Without our probe, TensorFlow prints the line here (else this test would prove nothing);
    # bert-convert runs run_main's start-up (flags, absl init callbacks, probe) and then fails on
    # the missing directory.
    control = subprocess.Popen(
        [sys.executable, "-c", "import tensorflow as tf; tf.config.list_logical_devices('GPU')"],
        stderr=subprocess.PIPE, text=True, env=env)
    command = subprocess.Popen(
        [sys.executable, "-m", "bert_finetune.cli.convert", f"--hf_model_dir={tmp_path}/none",
         f"--output_dir={tmp_path}/out"], stderr=subprocess.PIPE, text=True, env=env)
    control_err = control.communicate(timeout=300)[1]
    command_err = command.communicate(timeout=300)[1]
    assert command.returncode == 1 and "directory not found" in command_err, command_err
    if "cuInit" not in control_err:
        pytest.skip("this TensorFlow prints no cuInit line here")
    assert "cuInit" not in command_err and "CUDA error" not in command_err, command_err


def test_first_import_inside_app_run_is_quiet_too():
    """bert-convert imports TensorFlow only after its input checks, inside absl's app.run, where
    the import itself runs TensorFlow's GPU-listing init callback: the probe must cover it."""
    if devices.nvidia_driver_present():
        pytest.skip("this machine has an NVIDIA driver")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "TF_CPP_MIN_LOG_LEVEL")}
    script = ("import sys\nfrom absl import app\nfrom bert_finetune.cli import devices\n"
              "def main(_):\n    devices.probe_devices()\n    import tensorflow as tf\n"
              "    tf.constant(1.0)\n    print('ran', file=sys.stderr)\napp.run(main)\n")
    proc = subprocess.run([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and "ran" in proc.stderr, proc.stderr
    assert "cuInit" not in proc.stderr and "CUDA error" not in proc.stderr, proc.stderr
