#!/bin/bash
# bench/vecops_outputs_equal.sh CHATVEC_A CHATVEC_B [MODELS_DIR] [WORK_PREFIX]: every vector-operation variant of
# the vecops benchmark (and mixes) run by both binaries at two chunk sizes; cmp on every output file.
# Outputs of main's binary and mine, byte for byte, on the 1b shape (both written to the same path, which the model card names).
A=${1:?main chatvec}; B=${2:?other chatvec}; M=${3:-/work/bench-models/merge-1b}; W=${4:-/tmp/vecops-eq}
for v in "keep:--keep 0.25" "dare:--dare 0.5 --seed 1" "clip:--clip 0.05" "dkc:--dare 0.3 --keep 0.4 --clip 0.02" "l1:--keep 0.25 --keep-rescale l1" "l2:--keep 0.25 --keep-rescale l2" "keepclip:--keep 0.25 --clip 0.05" "dl1c:--dare 0.3 --keep 0.4 --keep-rescale l1 --clip 0.02"; do
  name=${v%%:*}; flags=${v#*:}
  for cs in 16MiB 5MB; do
    rm -rf $W-a $W-o
    nice $A -q merge --base $M/base --chat $M/chat --target $M/target --ratio 0.5 --chunk-size $cs $flags -o $W-o || echo FAIL main
    mv $W-o $W-a
    nice $B -q merge --base $M/base --chat $M/chat --target $M/target --ratio 0.5 --chunk-size $cs $flags -o $W-o || echo FAIL mine
    nd=0; nb=0; names=""
    for f in $W-a/*; do
      b=$W-o/$(basename $f)
      if ! cmp -s $f $b; then nd=$((nd+1)); names="$names $(basename $f)"; nb=$((nb + $(cmp -l $f $b | wc -l))); fi
    done
    echo "$name ($flags) chunk $cs: files $(ls $W-a | wc -l), differing files $nd ($names), differing bytes $nb"
  done
done
rm -rf $W-a $W-o
