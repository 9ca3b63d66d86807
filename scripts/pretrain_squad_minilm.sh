#!/usr/bin/env bash
# Continued pretraining of all-MiniLM-L6-v2 (Google-format checkpoint, no cls/ heads: they start
# fresh) on SQuAD v1.1 contexts, with masked-LM / next-sentence evaluation on held-out articles
# before training and at every saved checkpoint. The README's recorded run is this script.
#
#   scripts/pretrain_squad_minilm.sh MODEL_DIR SQUAD_DIR OUT_DIR
#
#   MODEL_DIR  Google-format MiniLM (bert_config.json, vocab.txt, bert_model.ckpt), e.g. what
#              ../shared/tools/minilm-weights writes into all-MiniLM-L6-v2-google-ckpt/
#   SQUAD_DIR  holds dev-v1.1-articles-00-15.json (train) and dev-v1.1-articles-16-47.json (eval)
#   OUT_DIR    emptied first; gets text/, records/, before/, train/, eval-N/ and summary.txt
#
# Environment: STEPS (300), SAVE_EVERY (100), BATCH (32), SEQ (64), PREDS (10), LR (1e-4),
# EVAL_STEPS (50), VENV (.venv). Runs under `nice -n 5`.
set -euo pipefail

MODEL=${1:?MODEL_DIR}
SQUAD=${2:?SQUAD_DIR}
OUT=${3:?OUT_DIR}
STEPS=${STEPS:-300}
SAVE_EVERY=${SAVE_EVERY:-100}
BATCH=${BATCH:-32}
SEQ=${SEQ:-64}
PREDS=${PREDS:-10}
LR=${LR:-1e-4}
EVAL_STEPS=${EVAL_STEPS:-50}
VENV=${VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-1}
RUN="nice -n 5"

rm -rf "$OUT"
mkdir -p "$OUT/text" "$OUT/records"
OUT=$(cd "$OUT" && pwd)
START=$SECONDS

# 1. SQuAD articles -> one sentence per line, one document per article.
"$VENV/bin/python" "$HERE/squad_to_pretraining_text.py" "$SQUAD/dev-v1.1-articles-00-15.json" \
  -o "$OUT/text/train.txt"
"$VENV/bin/python" "$HERE/squad_to_pretraining_text.py" "$SQUAD/dev-v1.1-articles-16-47.json" \
  -o "$OUT/text/eval.txt"

# 2. Records: train with 3 different maskings of the text, eval with one.
common=(--vocab_file="$MODEL/vocab.txt" --do_lower_case=true --max_seq_length="$SEQ"
        --max_predictions_per_seq="$PREDS" --masked_lm_prob=0.15 --random_seed=12345)
$RUN "$VENV/bin/bert-create-pretraining-data" "${common[@]}" --input_file="$OUT/text/train.txt" \
  --output_file="$OUT/records/train.tfrecord" --dupe_factor=3 2> "$OUT/create_train.log"
$RUN "$VENV/bin/bert-create-pretraining-data" "${common[@]}" --input_file="$OUT/text/eval.txt" \
  --output_file="$OUT/records/eval.tfrecord" --dupe_factor=1 2> "$OUT/create_eval.log"
grep -h "Wrote .* total instances" "$OUT"/create_*.log

pretrain=("$VENV/bin/bert-pretrain" --bert_config_file="$MODEL/bert_config.json"
          --max_seq_length="$SEQ" --max_predictions_per_seq="$PREDS" --eval_batch_size=32
          --max_eval_steps="$EVAL_STEPS")

# 3. Before: the encoder as released, fresh cls/ heads.
$RUN "${pretrain[@]}" --do_eval=true --input_file="$OUT/records/eval.tfrecord" \
  --init_checkpoint="$MODEL/bert_model.ckpt" --output_dir="$OUT/before" 2> "$OUT/before.log"
grep -h "Initialised fresh" "$OUT/before.log" | cut -c1-200

# 4. Train.
T0=$SECONDS
$RUN "${pretrain[@]}" --do_train=true --input_file="$OUT/records/train.tfrecord" \
  --init_checkpoint="$MODEL/bert_model.ckpt" --output_dir="$OUT/train" \
  --train_batch_size="$BATCH" --num_train_steps="$STEPS" --num_warmup_steps=$((STEPS / 10)) \
  --learning_rate="$LR" --save_checkpoints_steps="$SAVE_EVERY" --iterations_per_loop=25 \
  --keep_checkpoint_max=20 2> "$OUT/train.log"
TRAIN_SECONDS=$((SECONDS - T0))

# 5. Each saved checkpoint on the held-out articles (a directory whose state file names it).
for ((n = SAVE_EVERY; n <= STEPS; n += SAVE_EVERY)); do
  mkdir -p "$OUT/eval-$n"
  printf 'model_checkpoint_path: "%s"\n' "$OUT/train/model.ckpt-$n" > "$OUT/eval-$n/checkpoint"
  $RUN "${pretrain[@]}" --do_eval=true --input_file="$OUT/records/eval.tfrecord" \
    --output_dir="$OUT/eval-$n" 2> "$OUT/eval-$n.log"
done

{
  echo "train: $STEPS steps x $BATCH, seq $SEQ, lr $LR, ${TRAIN_SECONDS}s"
  for d in before $(for ((n = SAVE_EVERY; n <= STEPS; n += SAVE_EVERY)); do echo "eval-$n"; done); do
    echo "$d: $(tr '\n' ' ' < "$OUT/$d/eval_results.txt")"
  done
  echo "total ${SECONDS}s (from $START)"
} | tee "$OUT/summary.txt"
