#!/usr/bin/env bash
# The Cloud TPU example of google-research/bert's README: fine-tune a GLUE task on a Cloud TPU.
#
#   export TPU_NAME=my-tpu                              # or grpc://10.0.0.2:8470
#   export BERT_BASE_DIR=gs://my-bucket/uncased_L-12_H-768_A-12
#   export GLUE_DIR=gs://my-bucket/glue_data
#   export OUTPUT_DIR=gs://my-bucket/mrpc_output
#   scripts/run_classifier_tpu.sh [--dry-run] [TASK] [extra bert-classify flags...]
#
# TASK defaults to MRPC; hyper-parameters come from configs/<task>.flags plus configs/tpu.flags
# (--use_tpu=true --iterations_per_loop=1000 ...). TPU_ZONE and GCP_PROJECT, when set, become
# --tpu_zone and --gcp_project. A Cloud TPU node reads and writes Cloud Storage only, so the
# paths should be gs:// (a TPU VM can also use local files). --dry-run prints the command.
set -euo pipefail
PROG=run_classifier_tpu.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then usage; exit 0; fi
DRY_RUN=0
if [[ ${1:-} == --dry-run ]]; then DRY_RUN=1; shift; fi
TASK=MRPC
if [[ $# -ge 1 && $1 != -* ]]; then TASK=$1; shift; fi
DIR=$(glue_dir "$TASK") || die "unknown GLUE task '$TASK'; one of: $GLUE_TASKS"

require_env TPU_NAME "the Cloud TPU's name or grpc://ip:8470"
require_env BERT_BASE_DIR "gs:// folder with vocab.txt, bert_config.json and bert_model.ckpt"
require_env GLUE_DIR "gs:// folder with the GLUE task folders"
require_env OUTPUT_DIR "gs:// folder for checkpoints and results"
for var in BERT_BASE_DIR GLUE_DIR OUTPUT_DIR; do
  [[ ${!var} == gs://* ]] ||
    echo "$PROG: warning: $var=${!var} is not a gs:// path; a Cloud TPU node cannot reach it" >&2
done

EXTRA=()
[[ -n ${TPU_ZONE:-} ]] && EXTRA+=(--tpu_zone="$TPU_ZONE")
[[ -n ${GCP_PROJECT:-} ]] && EXTRA+=(--gcp_project="$GCP_PROJECT")

set_preset "$TASK"
run_or_print "$DRY_RUN" "$(bert_classify_cmd)" \
  "${PRESET[@]}" \
  --flagfile="$CONFIGS_DIR/tpu.flags" \
  --data_dir="$GLUE_DIR/$DIR" \
  --vocab_file="$BERT_BASE_DIR/vocab.txt" \
  --bert_config_file="$BERT_BASE_DIR/bert_config.json" \
  --init_checkpoint="$BERT_BASE_DIR/bert_model.ckpt" \
  --output_dir="$OUTPUT_DIR" \
  --tpu_name="$TPU_NAME" \
  ${EXTRA[@]+"${EXTRA[@]}"} \
  "$@"
