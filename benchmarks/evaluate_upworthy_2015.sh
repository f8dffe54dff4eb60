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
"$PY" - "$OUT" <<'PYEOF'
import sys
from deconfoundlm.logs import upworthy
out = sys.argv[1]
pk = upworthy.load_packages()
pk = pk[upworthy.reliable(pk)]
early, late = pk[pk["test_week"] < 201501], pk[pk["test_week"] >= 201501]
early.groupby("test_id").sample(1, random_state=0).to_csv(f"{out}/observational_before_2015.csv", index=False)
late.to_csv(f"{out}/ab_tests_2015.csv", index=False)
print(f"observational log: {early['test_id'].nunique()} tests before 2015; A/B tests of 2015: "
      f"{late['test_id'].nunique()} tests, {len(late)} packages")
PYEOF
ROLES=(--text headline --outcome clicks --trials impressions --encoder "$ENC")
"$DC" fit-reward "$OUT/observational_before_2015.csv" "${ROLES[@]}" --method naive --out "$OUT/naive" --force
"$DC" fit-reward "$OUT/observational_before_2015.csv" "${ROLES[@]}" --confounder test_week:time \
    --method deconfound --out "$OUT/deconfound" --force
cd "$OUT"
echo "\$ deconfoundlm evaluate naive deconfound ab_tests_2015.csv --text headline --test test_id --outcome clicks --trials impressions --out evaluation.json"
"$OLDPWD/$DC" evaluate naive deconfound ab_tests_2015.csv --text headline --test test_id --outcome clicks \
    --trials impressions --out evaluation.json --force
"$OLDPWD/$DC" report deconfound --evaluation evaluation.json --force
