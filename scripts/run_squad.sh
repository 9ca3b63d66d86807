#!/usr/bin/env bash
# Fine-tunes BERT on SQuAD and predicts (with EM/F1) on its dev set, as in google-research/bert's README.
#
#   export BERT_BASE_DIR=/path/to/uncased_L-12_H-768_A-12   # vocab.txt bert_config.json bert_model.ckpt
#   export SQUAD_DIR=/path/to/squad                          # train-v1.1.json dev-v1.1.json (v2.0 alike)
#   scripts/run_squad.sh [--dry-run] v1|v2 [extra bert-squad flags...]
#
# v1 trains on $SQUAD_DIR/train-v1.1.json and predicts on dev-v1.1.json; v2 uses train-v2.0.json
# and dev-v2.0.json with --version_2_with_negative. The hyper-parameters come from
# configs/squad_v1.flags / squad_v2.flags; extra flags override them (e.g. --train_file=...,
# --num_train_epochs=1). OUTPUT_DIR defaults to /tmp/squad_v1_output (v2: /tmp/squad_v2_output).
# --dry-run prints the bert-squad command instead of running it. BERT_SQUAD overrides the
# command (default: bert-squad on PATH, else the repo's .venv/bin/bert-squad).
set -euo pipefail
PROG=run_squad.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; exit 0; fi
DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; shift; fi
[[ $# -ge 1 && $1 != -* ]] || die "usage: $PROG [--dry-run] v1|v2 [bert-squad flags...]"
case $(lower "$1") in
  v1 | v1.1) VERSION=v1 SUFFIX=v1.1 ;;
  v2 | v2.0) VERSION=v2 SUFFIX=v2.0 ;;
  *) die "unknown SQuAD version '$1': use v1 or v2" ;;
esac
shift

require_env BERT_BASE_DIR "folder with vocab.txt, bert_config.json and bert_model.ckpt"
require_env SQUAD_DIR "folder with train-$SUFFIX.json and dev-$SUFFIX.json"
OUTPUT_DIR=${OUTPUT_DIR:-/tmp/squad_${VERSION}_output}

run_or_print "$DRY_RUN" "$(tool_cmd BERT_SQUAD bert-squad)" \
  "--flagfile=$CONFIGS_DIR/squad_$VERSION.flags" \
  --train_file="$SQUAD_DIR/train-$SUFFIX.json" \
  --predict_file="$SQUAD_DIR/dev-$SUFFIX.json" \
  --vocab_file="$BERT_BASE_DIR/vocab.txt" \
  --bert_config_file="$BERT_BASE_DIR/bert_config.json" \
  --init_checkpoint="$BERT_BASE_DIR/bert_model.ckpt" \
  --output_dir="$OUTPUT_DIR" \
  "$@"
