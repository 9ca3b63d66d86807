# Shared by run_glue.sh and run_classifier_tpu.sh (sourced, not run). Callers set PROG (their
# name) before sourcing. Kept to bash 3.2 (macOS): no ${x,,}, no mapfile.

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIGS_DIR=$REPO_DIR/configs
GLUE_TASKS="CoLA SST-2 MRPC STS-B QQP MNLI MNLI-MM QNLI RTE WNLI"

# usage: prints the calling script's header comment.
usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; }

die() { echo "$PROG: error: $*" >&2; exit 1; }

# require_env NAME WHAT: dies unless the environment variable NAME is set and non-empty.
require_env() {
  [[ -n ${!1:-} ]] || die "$1 is not set: export $1=<$2>"
}

lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

# glue_dir TASK: the GLUE download's folder name for TASK (case-insensitive); fails if unknown.
glue_dir() {
  case $(lower "$1") in
    cola) echo CoLA ;; sst-2) echo SST-2 ;; mrpc) echo MRPC ;; sts-b) echo STS-B ;;
    qqp) echo QQP ;; mnli | mnli-mm) echo MNLI ;; qnli) echo QNLI ;; rte) echo RTE ;;
    wnli) echo WNLI ;; *) return 1 ;;
  esac
}

# set_preset TASK: sets the array PRESET to the preset's --flagfile (+ the MNLI-MM task override).
set_preset() {
  local task
  task=$(lower "$1")
  if [[ $task == mnli-mm ]]; then
    PRESET=("--flagfile=$CONFIGS_DIR/mnli.flags" "--task_name=MNLI-MM")
  else
    PRESET=("--flagfile=$CONFIGS_DIR/$task.flags")
  fi
}

# bert_classify_cmd: $BERT_CLASSIFY, else bert-classify on PATH, else the repo's .venv.
bert_classify_cmd() {
  if [[ -n ${BERT_CLASSIFY:-} ]]; then
    echo "$BERT_CLASSIFY"
  elif command -v bert-classify >/dev/null 2>&1; then
    echo bert-classify
  elif [[ -x $REPO_DIR/.venv/bin/bert-classify ]]; then
    echo "$REPO_DIR/.venv/bin/bert-classify"
  else
    echo bert-classify
  fi
}

# run_or_print DRY_RUN CMD...: prints the command (shell-quoted, one flag a line) or runs it.
run_or_print() {
  local dry=$1
  shift
  if [[ $dry == 1 ]]; then
    printf '%q' "$1"
    shift
    local arg
    for arg in "$@"; do printf ' \\\n  %q' "$arg"; done
    printf '\n'
  else
    command -v "$1" >/dev/null 2>&1 ||
      die "$1 not found: activate the project's venv (make install) or set BERT_CLASSIFY"
    exec "$@"
  fi
}

# tool_cmd VAR NAME: $VAR if set, else NAME on PATH, else the repo's .venv/bin/NAME, else NAME.
tool_cmd() {
  if [[ -n ${!1:-} ]]; then
    echo "${!1}"
  elif command -v "$2" >/dev/null 2>&1; then
    echo "$2"
  elif [[ -x $REPO_DIR/.venv/bin/$2 ]]; then
    echo "$REPO_DIR/.venv/bin/$2"
  else
    echo "$2"
  fi
}
