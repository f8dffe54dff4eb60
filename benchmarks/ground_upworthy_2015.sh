#!/usr/bin/env bash
# `fit-reward --ab` on real data: a reward fitted on an observational log of the Upworthy tests
# before 2015 (one randomly chosen package per test, the week as confounder), grounded on N of
# the randomized tests before 2015 (all their packages), evaluated with its calibration on every
# reliably randomized test of 2015. Usage: bash benchmarks/ground_upworthy_2015.sh [OUT_DIR] [N] [ENCODER]
set -euo pipefail
OUT=${1:-/tmp/deconfoundlm-ground-2015}
N=${2:-200}
ENC=${3:-minilm}
PY=${PY:-.venv/bin/python}
DC=${DC:-.venv/bin/deconfoundlm}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
"$PY" - "$OUT" "$N" <<'PYEOF'
import sys
import numpy as np
from deconfoundlm.logs import upworthy
out, n = sys.argv[1], int(sys.argv[2])
pk = upworthy.load_packages()
pk = pk[upworthy.reliable(pk)]
early, late = pk[pk["test_week"] < 201501], pk[pk["test_week"] >= 201501]
early.groupby("test_id").sample(1, random_state=0).to_csv(f"{out}/observational_before_2015.csv", index=False)
tests = np.random.default_rng(0).choice(np.sort(early["test_id"].unique()), n, replace=False)
early[early["test_id"].isin(tests)].to_csv(f"{out}/ab_tests_before_2015.csv", index=False)
late.to_csv(f"{out}/ab_tests_2015.csv", index=False)
print(f"observational log: {early['test_id'].nunique()} tests before 2015; A/B tests for grounding: {n} of them; "
      f"A/B tests of 2015 (evaluation): {late['test_id'].nunique()}")
PYEOF
ROLES=(--text headline --outcome clicks --trials impressions --encoder "$ENC" --confounder test_week:time)
cd "$OUT"
DC="$OLDPWD/$DC"
"$DC" fit-reward observational_before_2015.csv "${ROLES[@]}" --out log-only --force
echo "\$ deconfoundlm fit-reward observational_before_2015.csv ${ROLES[*]} --ab ab_tests_before_2015.csv --test test_id --out grounded"
"$DC" fit-reward observational_before_2015.csv "${ROLES[@]}" --ab ab_tests_before_2015.csv --test test_id \
    --out grounded --force
echo "\$ deconfoundlm evaluate log-only grounded ab_tests_2015.csv --text headline --test test_id --outcome clicks --trials impressions --out evaluation.json"
"$DC" evaluate log-only grounded ab_tests_2015.csv --text headline --test test_id --outcome clicks \
    --trials impressions --out evaluation.json --force
