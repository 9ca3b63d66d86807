"""What every console script shares: one-line errors instead of tracebacks, a --help that lists
the command's flags (cli/usage.py), a start without CUDA noise on CPU-only machines
(cli/devices.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

from bert_finetune.cli import devices, usage
from bert_finetune.errors import UserError


def fail(program: str, message: str) -> NoReturn:
    """Prints `program: error: message` on one line to stderr and exits 1."""
    sys.stderr.write(f"{program}: error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()
    sys.exit(1)


def run_task(program: str, options, validate: Callable, run: Callable) -> None:
    """Validates `options` (every problem on one line, then exit 1) and runs the task."""
    problems = validate(options)
    if problems:
        fail(program, " | ".join(problems))
    run(options)


def run_main(program: str, main: Callable[[list[str]], None],
             original: str | Sequence[str] | None = None) -> None:
    """`absl.app.run(main)`; bad flags and UserError become one stderr line and exit 1.

    `--help` lists the command's flags: those of `original` first (an original script's name,
    e.g. "run_squad.py", or its flag names; by default the script `program` replaces, see
    usage.ORIGINAL_SCRIPT), then the additions. Its text starts with the docstring of the
    module defining `main`.
    """
    module = sys.modules.get(getattr(main, "__module__", None) or "")
    usage.install_help(program, getattr(module, "__doc__", None), original,
                       main_module=getattr(module, "__name__", None))

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(argv)
        except flags.Error as e:  # absl's own message spans two lines
            fail(program, str(e))
        # Here, not in main: absl's init callbacks (one of TensorFlow's lists the GPUs) run
        # between parsing and main.
        if "tensorflow" in sys.modules:
            devices.probe_devices()  # without the CUDA error line of a CPU-only machine
        return rest

    def wrapped(argv: list[str]) -> None:
        logging.set_verbosity(logging.INFO)
        if len(argv) > 1:
            fail(program, f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            main(argv)
        except UserError as e:
            fail(program, str(e))
        except (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError) as e:
            fail(program, f"{e.filename}: {e.strerror}")
        except KeyboardInterrupt:
            fail(program, "interrupted; a rerun resumes from the last checkpoint")

    app.run(wrapped, flags_parser=parse)
