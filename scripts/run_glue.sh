#!/usr/bin/env bash
# Fine-tunes and evaluates a GLUE task with a BERT checkpoint, as in google-research/bert's README.
#
#   export BERT_BASE_DIR=/path/to/uncased_L-12_H-768_A-12   # vocab.txt bert_config.json bert_model.ckpt
#   export GLUE_DIR=/path/to/glue_data                       # GLUE_DIR/MRPC/train.tsv ...
#   scripts/run_glue.sh [--dry-run] TASK [extra bert-classify flags...]
#
# TASK: CoLA SST-2 MRPC STS-B QQP MNLI MNLI-MM QNLI RTE WNLI (case-insensitive); the
# hyper-parameters come from configs/<task>.flags, and extra flags override them
# (e.g. --do_predict=true --num_train_epochs=2). OUTPUT_DIR defaults to /tmp/<task>_output.
# --dry-run prints the bert-classify command instead of running it. BERT_CLASSIFY overrides the
# command (default: bert-classify on PATH, else the repo's .venv/bin/bert-classify).
set -euo pipefail
PROG=run_glue.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; exit 0; fi
DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; shift; fi
[[ $# -ge 1 && $1 != -* ]] || die "usage: $PROG [--dry-run] TASK [bert-classify flags...]; TASK is one of: $GLUE_TASKS"
TASK=$1
shift
DIR=$(glue_dir "$TASK") || die "unknown GLUE task '$TASK'; one of: $GLUE_TASKS (other tasks: call bert-classify directly)"

require_env BERT_BASE_DIR "folder with vocab.txt, bert_config.json and bert_model.ckpt"
require_env GLUE_DIR "folder with the GLUE task folders, e.g. \$GLUE_DIR/$DIR/train.tsv"
OUTPUT_DIR=${OUTPUT_DIR:-/tmp/$(lower "$TASK")_output}

set_preset "$TASK"
run_or_print "$DRY_RUN" "$(bert_classify_cmd)" \
  "${PRESET[@]}" \
  --data_dir="$GLUE_DIR/$DIR" \
  --vocab_file="$BERT_BASE_DIR/vocab.txt" \
  --bert_config_file="$BERT_BASE_DIR/bert_config.json" \
  --init_checkpoint="$BERT_BASE_DIR/bert_model.ckpt" \
  --output_dir="$OUTPUT_DIR" \
  "$@"
