#!/usr/bin/env bash
# Whole-process `fit-reward` with minilm and with minilm-onnx on the 4,873-row Upworthy log (one
# package per test), alternating, REPS runs each (default 2), every run with an empty cache folder
# (DECONFOUNDLM_CACHE): the embeddings are computed and the ONNX model is exported inside the run.
# Then the same with the one-time export kept (empty embedding cache only).
# Usage: bash benchmarks/onnx_ratio.sh [OUT_FILE]
set -euo pipefail
OUT=${1:-benchmarks/results/onnx_ratio.txt}
PY=${PY:-.venv/bin/python}
REPS=${REPS:-2}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -c "
from deconfoundlm.logs.upworthy import load_packages
load_packages().groupby('test_id').sample(1, random_state=0).to_csv('$TMP/log.csv', index=False)"
ROLES=(--text headline --outcome clicks --trials impressions --confounder test_week:time)
run() {  # encoder, cache folder -> seconds
  local s e
  s=$(date +%s.%N)
  DECONFOUNDLM_CACHE="$2" "$PY" -m deconfoundlm fit-reward "$TMP/log.csv" "${ROLES[@]}" --encoder "$1" \
    --out "$TMP/r-$1" --force --quiet >/dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
measure() {  # mode (cold: empty cache folder; kept: the ONNX export kept, empty embedding cache)
  : > "$TMP/$1.minilm"; : > "$TMP/$1.minilm-onnx"
  for i in $(seq "$REPS"); do
    for enc in minilm minilm-onnx; do
      if [ "$1" = cold ]; then rm -rf "$TMP/cache"; else rm -f "$TMP/cache/embeddings.sqlite"; fi
      run "$enc" "$TMP/cache" >> "$TMP/$1.$enc"
    done
  done
}
measure cold
measure kept
{
  for mode in cold kept; do
    a=$(median < "$TMP/$mode.minilm"); b=$(median < "$TMP/$mode.minilm-onnx")
    what=$([ "$mode" = cold ] && echo "empty cache folder (ONNX export inside the run)" || echo "empty embedding cache, ONNX export kept")
    printf "4,873 rows, %s, median of %s: minilm %.1f s [%s], minilm-onnx %.1f s [%s], ratio %.2f\n" "$what" "$REPS" \
      "$a" "$(paste -sd' ' "$TMP/$mode.minilm")" "$b" "$(paste -sd' ' "$TMP/$mode.minilm-onnx")" "$(echo "$b / $a" | bc -l)"
  done
} | tee "$OUT"
