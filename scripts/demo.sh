#!/usr/bin/env bash
# The main job on a real default: generate three related Llama-shaped
# checkpoints (base, chat, target; bf16, sharded differently, each with the
# same Llama-2-style tokenizer), merge them with chatvec, print the merged
# model's card, and check every element of the result against PyTorch.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CHATVEC:-build/src/cli/chatvec}
DIR=${1:-/tmp/chatvec-demo}
SHAPE=${SHAPE:-medium}
PY=/usr/bin/python3
mkdir -p "$DIR"
if [ ! -f "$DIR/target/tokenizer.json" ]; then
  rm -rf "$DIR/base" "$DIR/chat" "$DIR/target"
  echo "demo: generating $SHAPE Llama-shaped models in $DIR" >&2
  $PY scripts/make_synthetic_model.py "$DIR/base" --shape "$SHAPE" --seed 1 --shard-bytes 20000000 --tokenizer
  # The chat model's template uses plain-text markers and the base's own
  # </s> as end of turn, as Llama-2-chat does: no token is added.
  $PY scripts/make_synthetic_model.py "$DIR/chat" --shape "$SHAPE" --seed 2 --derive-from "$DIR/base" --noise 0.01 \
    --tokenizer --chat-template "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST] {{ m.content }} [/INST]{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}"
  $PY scripts/make_synthetic_model.py "$DIR/target" --shape "$SHAPE" --seed 3 --derive-from "$DIR/base" --noise 0.05 \
    --reverse-order --tokenizer
fi
"$BIN" inspect "$DIR/target" --no-tensors
"$BIN" merge --base "$DIR/base" --chat "$DIR/chat" --target "$DIR/target" --ratio 0.5 -o "$DIR/merged" --force
echo "demo: the merged model's card ($DIR/merged/README.md):" >&2
cat "$DIR/merged/README.md"
echo "demo: checking every element against PyTorch" >&2
result=$($PY tests/merge/reference_merge.py "$DIR/merged" "$DIR/target" --term 0.5 "$DIR/chat" "$DIR/base")
echo "$result"
$PY - "$result" <<'PYEOF'
import json, sys
r = json.loads(sys.argv[1])
if r["bad_count"]:
    print(f"demo: FAILED: {r['bad_count']} of {r['checked']} tensors differ from PyTorch's merge", file=sys.stderr)
    sys.exit(1)
print(f"demo: OK: all {r['checked']} tensors equal PyTorch's target + 0.5 * (chat - base) "
      f"({r['combined']} combined, {r['copied']} copied)")
PYEOF
