"""The peers of the same run: `../shared/bench/run-peers` (Hugging Face on PyTorch, keras-hub on
TensorFlow), run with their documented defaults, and the matching of their records to ours.

Ratios compare the best step of each side (batch / fastest timed step), as issue #15 asks: on a
shared machine the medians of repeated runs move by up to +-20%, the best steps much less.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

HF, KERAS_HUB = "hf-torch", "keras-hub-tf"
PEER_NAMES = {HF: "HF", KERAS_HUB: "keras-hub"}
ENV_DIR = "BERT_BENCH_PEERS_DIR"


def find_peers_dir(explicit: str | None, repo_root: Path) -> Path | None:
    """`explicit` (only it, when given), else $BERT_BENCH_PEERS_DIR, else ../shared/bench beside
    the repository (or the current directory); None when that folder has no run-peers."""
    candidates = [explicit] if explicit else [
        os.environ.get(ENV_DIR), repo_root.parent / "shared" / "bench",
        Path.cwd().parent / "shared" / "bench"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "run-peers").is_file():
            return Path(candidate).resolve()
    return None


class PeersRun(NamedTuple):
    """What one call of run-peers gave: its records, one status line, and whether every
    configuration it ran was measured (exit 0, records, none failed)."""
    records: list[dict]
    status: str
    clean: bool


def run_peers(peers_dir: Path, out_json: Path, venvs: Path, log_path: Path, quick: bool,
              extra_args: str = "") -> PeersRun:
    """Runs run-peers (its setup-peers first) and says what it gave.

    The peers' virtual environments live in `venvs` (PEERS_VENV / PEERS_VENV_TF); their output
    goes to `log_path`. A failed setup, or a run that wrote nothing, gives no records and says
    why; a run with some failed configurations keeps the records it has.
    """
    venvs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PEERS_VENV=str(venvs / "hf"), PEERS_VENV_TF=str(venvs / "tf"))
    if extra_args:
        env["PEERS_ARGS"] = extra_args
    if out_json.exists():
        out_json.unlink()
    cmd = [str(peers_dir / "run-peers")] + (["--quick"] if quick else []) + [str(out_json)]
    sys.stderr.write(f"[bench] peers: {' '.join(cmd)} (log: {log_path})\n")
    with open(log_path, "w") as log:
        code = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, check=False).returncode
    records = load_records(out_json) if out_json.exists() else []
    if not records:
        why = _last_lines(log_path)
        return PeersRun([], f"peers: not measured (run-peers exited {code}: {why}; "
                            f"see {log_path})", False)
    errors = sum(1 for r in records if r.get("error"))
    shown = os.path.relpath(peers_dir / "run-peers")  # no machine path in the README
    status = f"peers: {len(records)} records from {shown}{' --quick' if quick else ''}"
    if code or errors:
        status += f" ({errors} failed configurations, exit {code}; see {log_path})"
    return PeersRun(records, status, not (code or errors))


def load_records(path: Path) -> list[dict]:
    """A run-peers JSON list, or JSON lines of peer records."""
    text = Path(path).read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = [json.loads(line) for line in text.splitlines() if line.strip()]
    return data if isinstance(data, list) else [data]


def _last_lines(path: Path, n: int = 2) -> str:
    try:
        lines = [x.strip() for x in Path(path).read_text().splitlines() if x.strip()]
    except OSError:
        return "no log"
    return " / ".join(lines[-n:])[-300:] if lines else "no output"


def best_rate(record: dict) -> float | None:
    """Examples per second of the fastest timed step (None for skipped or failed records)."""
    t = record.get("step_time_s_min")
    if not t or record.get("error") or record.get("skipped"):
        return None
    return record.get("batch", 32) / t


def best_peer_record(records: list[dict], peer: str, model: str, mode: str, precision: str
                     ) -> dict | None:
    """The peer's record for (model, mode, precision); of several (keras-hub's jit off and on)
    the one with the fastest step: we compare against each peer at its best setting."""
    found = [r for r in records if r.get("peer") == peer and r.get("model") == model
             and r.get("mode") == mode and r.get("precision") == precision
             and best_rate(r) is not None]
    return max(found, key=best_rate, default=None)


def ratio(ours: dict, peer: dict | None) -> float | None:
    """ours / peer, best step against best step."""
    if peer is None:
        return None
    a, b = best_rate(ours), best_rate(peer)
    return a / b if a and b else None
