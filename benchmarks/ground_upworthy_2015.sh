#!/usr/bin/env bash
# `fit-reward --ab` on real data: a reward fitted on an observational log of the Upworthy tests
# before 2015 (one randomly chosen package per test, the week as confounder), grounded on N of
# the randomized tests before 2015 (all their packages), evaluated with its calibration on every
# reliably randomized test of 2015, next to the reward of the same N tests alone (fit-reward
# --test without --ab). Usage: bash benchmarks/ground_upworthy_2015.sh [OUT_DIR] [N] [ENCODER]
set -euo pipefail
OUT=${1:-/tmp/deconfoundlm-ground-2015}
N=${2:-200}
ENC=${3:-minilm}
PY=${PY:-.venv/bin/python}
DC=${DC:-.venv/bin/deconfoundlm}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
"$PY" "$(dirname "$0")/upworthy_files.py" by-2015 "$OUT" --ground "$N"
ROLES=(--text headline --outcome clicks --trials impressions --encoder "$ENC" --confounder test_week:time)
cd "$OUT"
DC="$OLDPWD/$DC"
"$DC" fit-reward observational_before_2015.csv "${ROLES[@]}" --out log-only --force
echo "\$ deconfoundlm fit-reward observational_before_2015.csv ${ROLES[*]} --ab ab_tests_before_2015.csv --test test_id --out grounded"
"$DC" fit-reward observational_before_2015.csv "${ROLES[@]}" --ab ab_tests_before_2015.csv --test test_id \
    --out grounded --force
echo "\$ deconfoundlm fit-reward ab_tests_before_2015.csv --text headline --outcome clicks --trials impressions --encoder $ENC --test test_id --out tests-only"
"$DC" fit-reward ab_tests_before_2015.csv --text headline --outcome clicks --trials impressions --encoder "$ENC" \
    --test test_id --out tests-only --force
echo "\$ deconfoundlm evaluate log-only grounded tests-only ab_tests_2015.csv --text headline --test test_id --outcome clicks --trials impressions --out evaluation.json"
"$DC" evaluate log-only grounded tests-only ab_tests_2015.csv --text headline --test test_id --outcome clicks \
    --trials impressions --out evaluation.json --force
