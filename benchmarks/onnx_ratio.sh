#!/usr/bin/env bash
# Whole-process `fit-reward` with minilm and with minilm-onnx on the 4,873-row Upworthy log (one
# package per test), cold embedding cache, the one-time ONNX export already made (it is kept in the
# cache folder's onnx/ between runs). Usage: bash benchmarks/onnx_ratio.sh [OUT_FILE]
set -euo pipefail
OUT=${1:-benchmarks/results/onnx_ratio.txt}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -c "
from deconfoundlm.logs.upworthy import load_packages
load_packages().groupby('test_id').sample(1, random_state=0).to_csv('$TMP/log.csv', index=False)"
ROLES=(--text headline --outcome clicks --trials impressions --confounder test_week:time)
export DECONFOUNDLM_CACHE="$TMP/cache"
"$PY" -m deconfoundlm fit-reward "$TMP/log.csv" "${ROLES[@]}" --encoder minilm-onnx --out "$TMP/warmup" --quiet >/dev/null
{
  for enc in minilm minilm-onnx; do
    rm -f "$DECONFOUNDLM_CACHE/embeddings.sqlite"
    s=$(date +%s.%N)
    "$PY" -m deconfoundlm fit-reward "$TMP/log.csv" "${ROLES[@]}" --encoder "$enc" --out "$TMP/r-$enc" --quiet >/dev/null
    e=$(date +%s.%N)
    echo "$enc $(echo "$e - $s" | bc)"
  done
} | tee "$TMP/times"
awk 'NR==1{a=$2} NR==2{b=$2} END{printf "4,873 rows, cold embedding cache, ONNX export kept: minilm %.1f s, minilm-onnx %.1f s, ratio %.2f\n", a, b, b/a}' "$TMP/times" | tee "$OUT"
