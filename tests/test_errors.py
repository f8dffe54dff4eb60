"""A user's mistake raised by the API is a ValueError, so code written for scikit-learn-style
libraries (``except ValueError``) catches it, and its message names the column."""

import pandas as pd
import pytest

from deconfoundlm.errors import UserError
from deconfoundlm.logs.roles import ColumnRoles
from deconfoundlm.logs.validate import validate_log


def test_a_missing_column_is_a_value_error_naming_it():
    df = pd.DataFrame({"headline": ["a", "b"], "clicks": [1, 0]})
    with pytest.raises(ValueError, match="ctr") as info:
        validate_log(df, ColumnRoles(text="headline", outcome="ctr"))
    assert isinstance(info.value, UserError)
