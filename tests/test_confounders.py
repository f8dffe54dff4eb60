import numpy as np
import pandas as pd

from deconfoundlm.features.confounders import ConfounderDesign
from deconfoundlm.logs.roles import ConfounderSpec
from deconfoundlm.logs.values import time_values


def test_week_codes_and_dates_are_ordered_days():
    weeks = time_values(pd.Series([201352, 201400, 201401, 201510], name="w"))
    assert np.all(np.diff(weeks) >= 0) and weeks[1] - weeks[0] <= 7
    days = time_values(pd.Series(["2014-01-01", "2014-01-08"], name="d"))
    assert days[1] - days[0] == 7


def test_rare_levels_pooled_and_unseen_levels_map_to_other():
    conf = pd.DataFrame({"slot": ["a"] * 10 + ["b"] * 10 + ["c"] * 2})
    design = ConfounderDesign([ConfounderSpec("slot", "categorical")], min_count=5).fit(conf)
    assert design.state_[0]["levels"] == ["a", "b", "__other__"]
    psi = design.transform(pd.DataFrame({"slot": ["a", "zzz"]})).toarray()
    np.testing.assert_array_equal(psi, [[1, 0, 0], [0, 0, 1]])


def test_design_roundtrips_through_json():
    rng = np.random.default_rng(0)
    conf = pd.DataFrame({"x": rng.normal(size=100), "slot": rng.choice(["a", "b"], 100)})
    specs = [ConfounderSpec("x", "numeric"), ConfounderSpec("slot", "categorical")]
    design = ConfounderDesign(specs).fit(conf)
    import json

    again = ConfounderDesign.from_config(json.loads(json.dumps(design.to_config())))
    np.testing.assert_allclose(design.transform(conf).toarray(), again.transform(conf).toarray())


def test_quantile_knots_from_counts_match_numpy_bit_for_bit():
    from deconfoundlm.features.confounders import _quantiles

    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 300))
        pool = rng.normal(size=int(rng.integers(1, 40))) * rng.choice([1e-3, 1.0, 1e5])
        v = rng.choice(pool, size=n)
        ps = np.linspace(0, 1, int(rng.integers(2, 12)))
        values, counts = np.unique(v, return_counts=True)
        np.testing.assert_array_equal(_quantiles(values, counts, ps), np.quantile(v, ps))


def test_design_from_merged_summaries_of_parts_equals_design_of_all_rows():
    # How a log spread over a cluster fits its design: each part summarized, summaries merged.
    rng = np.random.default_rng(4)
    n = 3000
    t = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 400 * 24 * 60, n), unit="min")
    conf = pd.DataFrame({
        "t": t.astype(str), "x": rng.choice(rng.normal(size=50), n),
        "slot": rng.choice(["a", "b", "c"], n), "h": rng.uniform(0, 24, n), "wd": rng.choice(["Mon", "Tue", "Sun"], n),
    })
    conf.loc[[5, 1500], "slot"] = "rare"  # 2 rows: pooled
    conf.loc[[6, 1600, 2900], "slot"] = "kept"  # 3 rows in three parts: min_count reached only when summed
    specs = [ConfounderSpec("t", "time"), ConfounderSpec("x", "numeric"), ConfounderSpec("slot", "categorical"),
             ConfounderSpec("h", "hour"), ConfounderSpec("wd", "weekday")]
    whole = ConfounderDesign(specs, min_count=3).fit(conf)
    design = ConfounderDesign(specs, min_count=3)
    cuts = [0, 7, 1000, 1001, 2500, n]  # uneven parts, one of a single row
    summaries = [design.summarize(conf.iloc[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    merged = summaries[0]
    for s in summaries[1:]:
        merged = ConfounderDesign.merge_summaries(merged, s)
    design.fit_summary(merged)
    assert design.to_config() == whole.to_config()
    assert whole.state_[0]["calendar"] == ["weekday", "hour"]  # time of day found across the parts
    assert whole.state_[2]["levels"] == ["a", "b", "c", "kept", "__other__"]
    np.testing.assert_array_equal(design.transform(conf).toarray(), whole.transform(conf).toarray())
