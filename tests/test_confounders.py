import numpy as np
import pandas as pd

from deconfoundlm.features.confounders import ConfounderDesign, time_values
from deconfoundlm.logs.roles import ConfounderSpec


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
