"""Where an export goes, and how it appears there: whole or not at all.

An export is built in a hidden temporary directory beside its target and renamed into place at the
end, so a server watching `--output_dir` (TF Serving polls it for new versions) never loads a
half-written model, and a failed export leaves nothing behind. A directory that exists and is not
empty is refused unless `overwrite` is set (then it is replaced after the new one is complete).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator

import tensorflow as tf
from absl import logging

from bert_finetune import fileio, tokenization
from bert_finetune.errors import UserError

EXPORT_INFO = "export_info.json"


def _non_empty(path: str) -> bool:
    return tf.io.gfile.isdir(path) and bool(tf.io.gfile.listdir(path))


def versions(base: str) -> list[int]:
    """The numeric version subdirectories of a TF Serving model base path, ascending."""
    if not tf.io.gfile.isdir(base):
        return []
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(base)]
    return sorted(int(n) for n in names if re.fullmatch(r"\d+", n)
                  and tf.io.gfile.isdir(os.path.join(base, n)))


def version_dir(base: str, version: int | None, overwrite: bool) -> str:
    """The version directory `base/<version>` a SavedModel export writes (TF Serving's layout).

    `version` None means 1 in a new or empty `base`. A non-empty `base` needs either an explicit
    new version (added beside the others) or `overwrite` (replaces that version, default the
    newest).
    """
    if tf.io.gfile.exists(base) and not tf.io.gfile.isdir(base):
        raise UserError(f"--output_dir={base} is a file, not a directory")
    existing = versions(base)
    if version is not None and version <= 0:
        raise UserError(f"--model_version={version} must be positive")
    if version is None:
        if _non_empty(base) and not overwrite:
            held = f" (holds version {', '.join(map(str, existing))})" if existing else ""
            new = (existing[-1] + 1) if existing else 1
            raise UserError(f"--output_dir={base} exists and is not empty{held}: pass "
                            f"--overwrite to replace it, or --model_version={new} to add a "
                            "version beside the others")
        version = existing[-1] if existing else 1
    target = os.path.join(base, str(version))
    if _non_empty(target) and not overwrite:
        raise UserError(f"--output_dir={base}: version {version} exists and is not empty; pass "
                        "--overwrite to replace it")
    return target


def check_target(path: str, overwrite: bool) -> None:
    """Refuses a non-empty directory `path` (a flat ONNX / TFLite export) unless `overwrite`."""
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise UserError(f"--output_dir={path} is a file, not a directory")
    if _non_empty(path) and not overwrite:
        raise UserError(f"--output_dir={path} exists and is not empty: pass --overwrite to "
                        "replace it")


@contextlib.contextmanager
def staged(target: str) -> Iterator[str]:
    """Yields a temporary directory to build `target` in; moves it to `target` on success.

    Local paths only get the rename; on remote storage (no directory rename) the export is
    written to `target` directly.
    """
    if fileio.is_remote(target):
        tf.io.gfile.makedirs(target)
        yield target
        return
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    # A hidden name: TF Serving only loads numeric version directories.
    tmp = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.tmp")
    os.makedirs(tmp)
    try:
        yield tmp
        if os.path.exists(target):
            old = os.path.join(parent, f".{name}.{secrets.token_hex(6)}.old")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_assets(directory: str, vocab_file: str, do_lower_case: bool, info: dict,
                 files: dict[str, str] | None = None) -> None:
    """vocab.txt, do_lower_case.txt, export_info.json and `files` ({name: text}) into directory."""
    tf.io.gfile.makedirs(directory)
    tf.io.gfile.copy(vocab_file, os.path.join(directory, "vocab.txt"), overwrite=True)
    texts = dict(files or {})
    texts[tokenization.SIDECAR_NAME] = "true\n" if do_lower_case else "false\n"
    texts[EXPORT_INFO] = json.dumps(info, indent=2, sort_keys=True) + "\n"
    for name, text in texts.items():
        with tf.io.gfile.GFile(os.path.join(directory, name), "w") as f:
            f.write(text)


def export_saved_model(output_dir: str, version: int | None, overwrite: bool,
                       build: Callable[[], tuple[tf.Module, dict]],
                       assets: Callable[[str], None], what: str = "") -> str:
    """Saves the module `build()` returns (with its signatures) as output_dir/<version>.

    The target is checked before `build` (which restores the model) runs; `assets(dir)` fills
    the SavedModel's assets/ directory. Returns the version directory written.
    """
    target = version_dir(output_dir, version, overwrite)
    module, signatures = build()
    with staged(target) as tmp:
        tf.saved_model.save(module, tmp, signatures=signatures)
        assets(os.path.join(tmp, "assets"))
    logging.info("Exported %s to %s", what, target)
    return target
