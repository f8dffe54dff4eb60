#!/usr/bin/env bash
# `deconfoundlm evaluate` on real A/B tests: rewards fitted on an observational log of the Upworthy
# tests before 2015 (one randomly chosen package per test, the week as confounder), evaluated on
# every reliably randomized test of 2015. Usage: bash benchmarks/evaluate_upworthy_2015.sh [OUT_DIR] [ENCODER]
set -euo pipefail
OUT=${1:-/tmp/deconfoundlm-evaluate-2015}
ENC=${2:-minilm}
PY=${PY:-.venv/bin/python}
DC=${DC:-.venv/bin/deconfoundlm}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
"$PY" "$(dirname "$0")/upworthy_files.py" by-2015 "$OUT"
ROLES=(--text headline --outcome clicks --trials impressions --encoder "$ENC")
"$DC" fit-reward "$OUT/observational_before_2015.csv" "${ROLES[@]}" --method naive --out "$OUT/naive" --force
"$DC" fit-reward "$OUT/observational_before_2015.csv" "${ROLES[@]}" --confounder test_week:time \
    --method deconfound --out "$OUT/deconfound" --force
cd "$OUT"
echo "\$ deconfoundlm evaluate naive deconfound ab_tests_2015.csv --text headline --test test_id --outcome clicks --trials impressions --out evaluation.json"
"$OLDPWD/$DC" evaluate naive deconfound ab_tests_2015.csv --text headline --test test_id --outcome clicks \
    --trials impressions --out evaluation.json --force
"$OLDPWD/$DC" report deconfound --evaluation evaluation.json --force
