#!/bin/sh
# Tokens/s of `chatvec generate` (greedy, CPU) on stories260K and on a random
# model of the Llama-3.2-1B shape (bf16, ~2.5 GB, generated once into
# $BENCH_DIR).  Usage: bench/engine_bench.sh [path/to/chatvec]
# Environment: STEPS_SMALL (default 256), STEPS_1B (default 32), BENCH_DIR
# (default /tmp/chatvec-bench), OMP_NUM_THREADS as usual.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
chatvec=${1:-$here/../build/src/cli/chatvec}
shared=${CHATVEC_SHARED:-$here/../../shared}
work=${BENCH_DIR:-/tmp/chatvec-bench}
mkdir -p "$work"

rate() {  # the "generated: N tokens, R tokens/s" figure of a run's stderr
  sed -n 's/.*generated: \([0-9]*\) tokens, \([0-9.]*\) tokens\/s.*/\2/p' "$1" | tail -1
}
prompt_rate() {  # the "prompt: N tokens, R tokens/s" figure
  sed -n 's/^prompt: \([0-9]*\) tokens, \([0-9.]*\) tokens\/s.*/\2/p' "$1" | tail -1
}
# 64 prompt ids (batched prompt processing)
ids64=128000$(i=1; while [ $i -lt 64 ]; do printf ',%d' $((i * 997 % 120000)); i=$((i + 1)); done)

if [ -f "$shared/models/stories260K/stories260K.bin" ]; then
  [ -d "$work/stories260K" ] || "$chatvec" -q convert llama2c "$shared/models/stories260K/stories260K.bin" \
      --tokenizer "$shared/models/stories260K/tok512.model" -o "$work/stories260K"
  "$chatvec" generate "$work/stories260K" --prompt-ids 1 -n "${STEPS_SMALL:-256}" --temperature 0 \
      >/dev/null 2>"$work/small.err"
  echo "stories260K (f32): $(rate "$work/small.err") tokens/s (${STEPS_SMALL:-256} tokens)"
else
  echo "stories260K: skipped ($shared/models/stories260K absent)"
fi

if [ ! -f "$work/llama1b/config.json" ]; then
  /usr/bin/python3 "$here/../scripts/make_synthetic_model.py" "$work/llama1b.tmp" --shape 1b --tied --dtype bf16 && mv "$work/llama1b.tmp" "$work/llama1b"
fi
"$chatvec" generate "$work/llama1b" --prompt-ids "$ids64" -n "${STEPS_1B:-32}" --temperature 0 \
    >/dev/null 2>"$work/big.err"
echo "llama-3.2-1B shape (bf16, random): $(rate "$work/big.err") tokens/s generating (${STEPS_1B:-32} tokens)," \
     "$(prompt_rate "$work/big.err") tokens/s prompt processing (64 tokens)"
