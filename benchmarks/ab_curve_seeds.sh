#!/usr/bin/env bash
# `benchmark ab-curve` through the CLI on seeded splits the demo does not use: the bundled Upworthy
# archive as a user would hand it in (LOG: one reliably randomized package per test, drawn with
# random_state=11; AB_FILE: every reliably randomized package), MiniLM, the week as confounder,
# 30% of the tests held out per split, 5 splits per seed. Prints, per seed and N, the three curves,
# log + tests minus the better of the other two ("gap"; the issue's bar: never below -0.005) and
# minus tests only ("margin").
# The runs overlap: run --seed S uses the splits seeded S..S+4 (seeds 7-10: 8 distinct splits).
# Usage: bash benchmarks/ab_curve_seeds.sh [OUT_DIR] [SEEDS...]   (about 50 s per seed, warm cache)
set -euo pipefail
OUT=${1:-/tmp/deconfoundlm-ab-curve-seeds}
shift || true
SEEDS=${*:-7 8 9 10}
PY=${PY:-.venv/bin/python}
DC=${DC:-.venv/bin/deconfoundlm}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
"$PY" "$(dirname "$0")/upworthy_files.py" all "$OUT" --random-state 11
for s in $SEEDS; do
  "$DC" benchmark ab-curve "$OUT/log.csv" "$OUT/ab.csv" --text headline --outcome clicks --trials impressions \
    --confounder test_week:time --test test_id --sizes 50,100,200,400,800 --seed "$s" --out "$OUT/seed$s" \
    --force --quiet > /dev/null
done
for s in $SEEDS; do
  "$PY" "$(dirname "$0")/curve_gap.py" "--seed $s" "$OUT/seed$s"
done
