#!/usr/bin/env bash
# The README's figures on how much the named confounders explain: `diagnose` on the bundled
# Upworthy log (one randomly chosen package per test, every test, the week as confounder) and on
# the Hacker News 2016 posts (posting time). Outputs (JSON and terminal) go to OUT_DIR.
# Usage: bash benchmarks/diagnose_readme.sh [OUT_DIR] [ENCODER]
set -euo pipefail
OUT=${1:-benchmarks/results}
ENC=${2:-minilm}
PY=${PY:-.venv/bin/python}
DC=${DC:-.venv/bin/deconfoundlm}
HN=${HN:-../shared/data/hackernews/hacker_news_2016.csv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" - "$TMP/upworthy_one_package_per_test.csv" <<'PYEOF'
import sys
from deconfoundlm.logs.upworthy import load_packages
pk = load_packages()
log = pk.groupby("test_id").sample(1, random_state=0)
log.to_csv(sys.argv[1], index=False)
print(f"Upworthy log: {len(log):,} rows (one package per test, random_state=0)")
PYEOF
run() {  # name, then the command's arguments
  local name=$1; shift
  echo "\$ deconfoundlm $*" | tee "$OUT/$name.txt"
  /usr/bin/time -f "wall %e s" "$DC" "$@" --out "$OUT/$name.json" --force 2>&1 | tee -a "$OUT/$name.txt"
}
run diagnose_upworthy_week diagnose "$TMP/upworthy_one_package_per_test.csv" --text headline --outcome clicks \
    --trials impressions --confounder test_week:time --encoder "$ENC"
run diagnose_hackernews_time diagnose "$HN" --text title --outcome num_points --confounder created_at:time \
    --encoder "$ENC"
