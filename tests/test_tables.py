"""The one standardisation and the one mean imputation that probes, baselines and fusion share."""
import numpy as np
import pandas as pd
import pytest

from musecl.tables import column_scale, impute_column_means, standardise_columns


def test_standardise_columns_and_a_constant_column():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 3))
    x[:, 2] = 7.0
    z = standardise_columns(x)
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1.0)
    assert (z[:, 2] == 0).all()  # constant: 0, not NaN


def test_column_scale_carries_training_rows_to_other_rows():
    train, other = np.array([[0.0, 1.0], [2.0, 1.0]]), np.array([[4.0, 5.0]])
    mean, std = column_scale(train)
    np.testing.assert_array_equal((other - mean) / std, [[3.0, 4.0]])


def test_impute_fills_column_means_or_the_means_given():
    table = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [np.nan, 4.0, 6.0]}, index=["r0", "r1", "r2"])
    np.testing.assert_array_equal(impute_column_means(table).to_numpy(), [[1, 5], [2, 4], [3, 6]])
    kept = impute_column_means(table, means=np.array([10.0, 20.0]))
    np.testing.assert_array_equal(kept.to_numpy(), [[1, 20], [10, 4], [3, 6]])
    assert list(kept.index) == ["r0", "r1", "r2"]
    with pytest.raises(ValueError, match="no region has"):
        impute_column_means(pd.DataFrame({"a": [np.nan, np.nan]}))
