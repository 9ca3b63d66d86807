"""`--help` of every console script in pyproject.toml lists each of that command's flags.

The scripts are discovered from pyproject.toml, so a new command is covered without editing this
test. Each runs in its own process (flags are process-global), all of them at once.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs one entry point with --help; writes what the process knows to a JSON file:
# the flags its bert_finetune modules define (after the entry point ran, so flags defined inside
# run() count too) and which class --helpfull is.
_SNIPPET = r"""
import importlib, json, sys
name, target, report = sys.argv[1:4]
module, function = target.split(":")
sys.argv = [name, "--help"]
code = None
try:
    getattr(importlib.import_module(module), function)()
except SystemExit as e:
    code = e.code
from absl import flags
FLAGS = flags.FLAGS
defined = [f.name for m, fl in FLAGS.flags_by_module_dict().items()
           if m.startswith("bert_finetune") for f in fl]
with open(report, "w") as f:
    json.dump({"exit": code, "flags": defined,
               "helpfull": type(FLAGS["helpfull"]).__module__ + "." +
                           type(FLAGS["helpfull"]).__name__}, f)
"""


def console_scripts() -> dict[str, str]:
    """[project.scripts] of pyproject.toml: {command: "module:function"}."""
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
        return dict(re.findall(r'^\s*([\w.-]+)\s*=\s*"([^"]+)"', section, re.M))
    return tomllib.loads(text)["project"]["scripts"]


def _blocks(help_text: str) -> dict[str, str]:
    """{flag name: its help block} in the order listed."""
    blocks: dict[str, str] = {}
    name = None
    for line in help_text.splitlines():
        m = re.match(r"^  --(?:\[no\])?([\w-]+):", line)
        if m:
            name = m.group(1)
            blocks[name] = line
        elif name and line.startswith("    "):
            blocks[name] += "\n" + line
        else:
            name = None
    return blocks


@pytest.fixture(scope="module")
def helps(tmp_path_factory) -> dict[str, tuple[str, dict]]:
    """{command: (--help stdout, report)} for every console script, run in parallel."""
    tmp = tmp_path_factory.mktemp("help")
    procs = {}
    for name, target in console_scripts().items():
        report = tmp / f"{name}.json"
        procs[name] = (subprocess.Popen(
            [sys.executable, "-c", _SNIPPET, name, target, str(report)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT), report)
    out = {}
    for name, (proc, report) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0 and report.exists(), f"{name}: {stderr[-2000:]}"
        out[name] = (stdout, json.loads(report.read_text()))
    return out


def test_every_console_script_lists_all_its_flags_with_defaults(helps):
    assert {"bert-classify", "bert-convert"} <= set(helps)
    for name, (text, report) in helps.items():
        assert report["exit"] == 0, name
        blocks = _blocks(text)
        missing = [f for f in report["flags"] if f not in blocks]
        assert not missing, f"{name} --help does not list {missing}"
        assert report["flags"], f"{name} defines no flags?"
        for flag, block in blocks.items():
            assert "(default: " in block, f"{name} --{flag}: no default shown"
        # --helpfull is still absl's.
        assert report["helpfull"] == "absl.app.HelpfullFlag", name
        assert "Try --helpfull" in text


def test_classify_help_lists_the_originals_flags_first(helps):
    from bert_finetune.cli.usage import ORIGINAL_FLAGS

    text, _ = helps["bert-classify"]
    original = ORIGINAL_FLAGS["run_classifier.py"]
    listed = list(_blocks(text))
    # Every flag of run_classifier.py, in its order, before every addition.
    assert listed[:len(original)] == list(original)
    assert {"compute_dtype", "use_xla", "keep_checkpoint_max"} <= set(listed[len(original):])
    assert "Flags of the original run_classifier.py" in text
    assert "Runner additions" in text
    assert "(default: '32')" in _blocks(text)["train_batch_size"]
    # The usage example from the module docstring comes first, its lines kept.
    assert text.startswith("bert-classify:")
    assert "--data_dir=$GLUE_DIR/MRPC \\\n" in text
