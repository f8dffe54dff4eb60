"""Property-based tests of the readers of folders a user hands in (hypothesis): a reward folder,
a policy folder, a demo output. Any edit of their JSON or CSV files (a value replaced by any JSON
value, a file truncated, a cell replaced by text) gives either a working result with finite numbers
or the tool's UserError: never another exception, never a NaN."""

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deconfoundlm.errors import UserError

pytestmark = pytest.mark.property

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _paths(obj, prefix=()):
    """Every key path of a JSON object (dicts and lists)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            yield from _paths(v, (*prefix, i))


def _replace(obj, path, value):
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def _edit_json(path, data):
    """Replace one value of a JSON file (any depth) by a random JSON value, or truncate the file."""
    text = path.read_text()
    if data.draw(st.sampled_from([False] * 5 + [True])):
        path.write_text(text[: data.draw(st.integers(0, max(len(text) - 1, 0)))])
        return
    obj = json.loads(text)
    where = data.draw(st.sampled_from(list(_paths(obj))))
    path.write_text(json.dumps(_replace(obj, where, data.draw(JSON_VALUES))))


def _user_error_or(fn):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except UserError:
        return None


def _copy(tmp_path_factory, src, name: str):
    """A fresh copy of a folder to edit."""
    d = tmp_path_factory.mktemp("edit") / name
    shutil.copytree(src, d)
    return d


@SETTINGS
@given(data=st.data())
def test_any_edited_reward_folder_loads_or_is_refused(tmp_path_factory, hashing_reward, data):
    from deconfoundlm.pipeline import load_reward

    d = _copy(tmp_path_factory, hashing_reward, "r")
    _edit_json(d / data.draw(st.sampled_from(["config.json", "metrics.json"])), data)

    def use():
        reward = load_reward(d)
        scores = reward.score(["you won't believe this", "10 facts about cats"])
        assert np.isfinite(scores).all()
        repr(reward)
        return scores

    _user_error_or(use)


@pytest.mark.parametrize("calendar", [[[]], [1], [{"a": 1}], ["weekday", "weekday"], "hour"])
def test_a_time_confounders_calendar_of_other_values_is_refused(tmp_path_factory, hashing_reward, calendar):
    """Found by the test above: a calendar list holding lists ended in TypeError (unhashable)."""
    from deconfoundlm.pipeline import load_reward

    d = _copy(tmp_path_factory, hashing_reward, "r")
    config = json.loads((d / "config.json").read_text())
    (time,) = [c for c in config["design"]["confounders"] if c["type"] == "time"]
    time["calendar"] = calendar
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="calendar must list weekday and/or hour"):
        load_reward(d)


@SETTINGS
@given(data=st.data())
def test_any_edited_reward_folder_reports_or_is_refused(tmp_path_factory, hashing_reward, data):
    from deconfoundlm.evaluation.report import write_report

    d = _copy(tmp_path_factory, hashing_reward, "r")
    _edit_json(d / "metrics.json", data)
    out = _user_error_or(lambda: write_report(d))
    if out is not None:
        assert "NaN" not in out.read_text() or "nan" in json.dumps(json.loads((d / "metrics.json").read_text()))


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from deconfoundlm.alignment.policies import tiny_headlines_path

    d = tmp_path_factory.mktemp("policy") / "p"
    shutil.copytree(tiny_headlines_path(), d)
    (d / "deconfoundlm.json").write_text(json.dumps({"format": "deconfoundlm-aligned-policy", "chat": False,
                                                     "method": "dpo", "steps": 1}))
    return d


@SETTINGS
@given(data=st.data())
def test_any_edited_policy_folder_is_checked_or_refused(tmp_path_factory, policy_dir, data):
    from deconfoundlm.alignment.policies import check_policy_dir

    d = _copy(tmp_path_factory, policy_dir, "p")
    _edit_json(d / data.draw(st.sampled_from(["deconfoundlm.json", "config.json"])), data)
    info = _user_error_or(lambda: check_policy_dir(d))
    assert info is None or (isinstance(info, dict) and isinstance(info.get("chat"), bool))


CSV_CELLS = st.one_of(st.text(max_size=8), st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.none())


@SETTINGS
@given(data=st.data())
def test_any_edited_demo_output_reports_or_is_refused(tmp_path_factory, quick_demo, data):
    from deconfoundlm.evaluation.report import write_report

    d = _copy(tmp_path_factory, quick_demo, "demo")
    name = data.draw(st.sampled_from(["results.csv", "timeseries.csv", "reward_by_week.csv", "differences.csv",
                                      "candidates.csv", "diagnostics.json", "sensitivity.json", "counts.json"]))
    if name.endswith(".json"):
        _edit_json(d / name, data)
    else:
        df = pd.read_csv(d / name)
        if len(df):
            row = data.draw(st.integers(0, len(df) - 1))
            col = data.draw(st.sampled_from(list(df.columns)))
            df[col] = df[col].astype(object)
            df.loc[row, col] = data.draw(CSV_CELLS)
        df.to_csv(d / name, index=False)
    _user_error_or(lambda: write_report(d, d / "r.html", force=True))
