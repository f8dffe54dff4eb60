#!/usr/bin/env bash
# `fit-reward --ab`, `evaluate` and `benchmark ab-curve` through the CLI on a semi-synthetic log
# whose outcome depends on a confounder the file does not name, next to the same log without it.
#
# Texts: the bundled Upworthy headlines (one half for the log, the other for the A/B tests). True
# effect on the logit: +0.25 for a question or "you"/"your", -0.10 for a headline with a digit,
# plus N(0, 0.05) per headline. LOG (15,000 rows, 500-3,000 impressions, week as the named
# confounder, +0.01 per week): in the confounded log a front-page placement that the file does not
# hold (+0.8 on the logit; given to 70% of the rows whose headline has a digit, 15% of the others);
# in the clean log none. AB_FILE: 1,500 randomized tests of 2-4 headlines each, 2,000-6,000
# impressions per arm, no placement. One data set per SEED (default 0). MiniLM, 5 splits, 30% of
# the tests held out.
#
# Prints, per log: the learning curve with log + tests minus the better of the other two ("gap";
# the bar of the log-plus-tests issue: never below -0.005) and minus tests only ("margin"); then
# `evaluate` of the log-only reward and of the log's reward grounded on 200 tests, on 500 tests
# held out from both, with the calibration verdicts.
# Usage: bash benchmarks/ab_curve_unnamed_confounder.sh [OUT_DIR] [SEEDS...]   (1.5 min per seed, warm cache)
set -euo pipefail
OUT=${1:-/tmp/deconfoundlm-unnamed-confounder}
shift || true
SEEDS=${*:-0}
PY=${PY:-.venv/bin/python}
DC=${DC:-.venv/bin/deconfoundlm}
[[ $DC = /* ]] || DC=$PWD/$DC  # evaluate runs in the data's folder (short reward names)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
for seed in $SEEDS; do
"$PY" - "$OUT/seed$seed" "$seed" <<'PYEOF'
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from deconfoundlm.logs import upworthy

out, seed = Path(sys.argv[1]), int(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
heads = pd.Series(upworthy.load_packages()["headline"].astype(str).unique())
heads = heads[heads.str.len() > 10].sample(frac=1, random_state=1).reset_index(drop=True)
digit = heads.str.contains(r"\d").to_numpy()
you = heads.str.contains(r"\?|\byou\b|\byour\b", flags=re.I).to_numpy()
for name, placement_effect in (("confounded", 0.8), ("clean", 0.0)):
    rng = np.random.default_rng(seed)
    true = 0.25 * you - 0.10 * digit + rng.normal(0, 0.05, len(heads))
    log_pool, ab_pool = np.arange(len(heads) // 2), np.arange(len(heads) // 2, len(heads))
    i = rng.choice(log_pool, 15000)
    week = rng.integers(0, 52, 15000)
    front_page = rng.random(15000) < np.where(digit[i], 0.7, 0.15)  # not in the file
    eta = -3.5 + 0.01 * week + true[i] + placement_effect * front_page
    shown = rng.integers(500, 3000, 15000)
    d = out / name
    d.mkdir(exist_ok=True)
    pd.DataFrame({"headline": heads[i].to_numpy(),
                  "week": pd.Timestamp("2020-01-06") + pd.to_timedelta(7 * week, "D"),
                  "impressions": shown, "clicks": rng.binomial(shown, 1 / (1 + np.exp(-eta)))}
                 ).to_csv(d / "log.csv", index=False)
    rows = []
    for t in range(1500):
        base = rng.normal(-3.5, 0.4)
        for j in rng.choice(ab_pool, rng.integers(2, 5), replace=False):
            m = int(rng.integers(2000, 6000))
            rows.append({"test": f"t{t}", "headline": heads[j], "impressions": m,
                         "clicks": int(rng.binomial(m, 1 / (1 + np.exp(-(base + true[j])))))})
    ab = pd.DataFrame(rows)
    ab.to_csv(d / "ab.csv", index=False)
    tests = ab["test"].unique()
    ab[ab["test"].isin(tests[:200])].to_csv(d / "ab_200.csv", index=False)
    ab[ab["test"].isin(tests[1000:])].to_csv(d / "ab_heldout.csv", index=False)
PYEOF
COLS=(--text headline --outcome clicks --trials impressions)
for name in confounded clean; do
  d="$OUT/seed$seed/$name"
  "$DC" benchmark ab-curve "$d/log.csv" "$d/ab.csv" "${COLS[@]}" --confounder week:time --test test \
    --sizes 50,100,200,400,800 --out "$d/curve" --force --quiet > /dev/null
  "$DC" fit-reward "$d/log.csv" "${COLS[@]}" --confounder week:time --out "$d/log_only" --force --quiet
  "$DC" fit-reward "$d/log.csv" "${COLS[@]}" --confounder week:time --ab "$d/ab_200.csv" --test test \
    --out "$d/grounded_200" --force --quiet
  "$PY" "$(dirname "$0")/curve_gap.py" "== seed $seed, $name log: learning curve" "$d/curve"
  (cd "$d" && "$DC" evaluate log_only grounded_200 ab_heldout.csv "${COLS[@]}" --test test --quiet)
  echo
done
done
