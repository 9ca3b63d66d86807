"""A quiet, honest start: TensorFlow's GPU probe without its CUDA error line on a CPU-only machine.

TensorFlow's first device listing calls `cuInit`; on a machine without an NVIDIA driver its CUDA
stub fails and TensorFlow prints `E... failed call to cuInit: ... CUDA error` to stderr, which
reads like a fault. `probe_devices()` runs that first listing itself with the C++ stderr (fd 2)
captured, and drops only that expected line, only when:
  - no NVIDIA driver is installed (/proc/driver/nvidia and /dev/nvidia* absent), and
  - the user did not ask for a GPU (CUDA_VISIBLE_DEVICES unset, empty or -1).
Everything else the probe printed is passed on unchanged. A machine with a driver whose GPU
TensorFlow cannot use keeps TensorFlow's lines, plus a warning of ours saying so. When no GPU
was found, the (empty) GPU list is made the visible one, so that the runtime's start-up does not
probe again and print the line anyway.
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile

from absl import logging

_EXPECTED_WITHOUT_DRIVER = ("failed call to cuInit",)


def nvidia_driver_present() -> bool:
    return os.path.exists("/proc/driver/nvidia/version") or bool(glob.glob("/dev/nvidia[0-9]*"))


def gpu_requested(environ: dict | None = None) -> bool:
    """Whether CUDA_VISIBLE_DEVICES names a device (the usual way to ask for a GPU)."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() not in ("", "-1")


def filter_probe_output(text: str, driver_present: bool, requested: bool) -> str:
    """The probe's stderr minus the lines that only say "there is no NVIDIA driver here"."""
    if driver_present or requested:
        return text
    return "".join(line for line in text.splitlines(keepends=True)
                   if not any(s in line for s in _EXPECTED_WITHOUT_DRIVER))


def probe_devices() -> list:
    """Lists the physical GPUs (TensorFlow's first device probe), quietly where that is honest.

    Returns the GPUs TensorFlow can use. Does nothing special if the devices were listed before.
    """
    def probe() -> list:
        # Imported here, inside the capture: a first import of TensorFlow inside absl's app.run
        # (e.g. bert-convert's, after its input checks) runs TensorFlow's GPU-listing init
        # callback at once. The CLIs import it anyway; this module stays light for --help.
        import tensorflow as tf
        return tf.config.list_physical_devices("GPU")

    driver, requested = nvidia_driver_present(), gpu_requested()
    if driver or requested:
        gpus = probe()
    else:
        gpus = _with_captured_stderr(probe,
                                     lambda text: filter_probe_output(text, driver, requested))
    import tensorflow as tf
    if driver and not gpus:
        logging.warning("An NVIDIA driver is installed but TensorFlow can use no GPU (see the "
                        "lines above): running on CPU")
    if not gpus:
        # No GPU to hide; this keeps the runtime's own start-up (a second cuInit) from
        # printing the same error again.
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:  # the runtime was already started: too late, and harmless
            pass
    return gpus


def _with_captured_stderr(fn, keep):
    """Runs fn() with file descriptor 2 redirected; writes keep(captured text) back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            result = fn()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = keep(tmp.read().decode("utf-8", errors="replace"))
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()
    return result
