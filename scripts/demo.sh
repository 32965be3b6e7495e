#!/usr/bin/env bash
# The main job on a real default: generate three related Llama-shaped
# checkpoints (base, chat, target; bf16, sharded differently), merge them with
# chatvec, and check every element of the result against PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHATVEC:-build/src/cli/chatvec}
DIR=${1:-/tmp/chatvec-demo}
SHAPE=${SHAPE:-medium}
PY=/usr/bin/python3
mkdir -p "$DIR"
if [ ! -d "$DIR/base" ]; then
  echo "demo: generating $SHAPE Llama-shaped models in $DIR" >&2
  $PY scripts/make_synthetic_model.py "$DIR/base" --shape "$SHAPE" --seed 1 --shard-bytes 20000000
  $PY scripts/make_synthetic_model.py "$DIR/chat" --shape "$SHAPE" --seed 2 --derive-from "$DIR/base" --noise 0.01 \
    --chat-template "{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"
  $PY scripts/make_synthetic_model.py "$DIR/target" --shape "$SHAPE" --seed 3 --derive-from "$DIR/base" --noise 0.05 --reverse-order
fi
"$BIN" inspect "$DIR/target" --no-tensors
"$BIN" merge --base "$DIR/base" --chat "$DIR/chat" --target "$DIR/target" --ratio 0.5 -o "$DIR/merged" --force
echo "demo: checking every element against PyTorch" >&2
$PY tests/merge/reference_merge.py "$DIR/merged" "$DIR/target" --term 0.5 "$DIR/chat" "$DIR/base"
