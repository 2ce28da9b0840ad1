"""Binning of numeric targets and bin metrics, on hand-made arrays with known answers (torch-free)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from datamodules.binning import (
    Binner,
    EqualWidthBinner,
    KMeansBinner,
    ManualBinner,
    OutlierFilter,
    QuantileBinner,
    balance_score,
    build_binner,
)
from fenlei.metrics import (
    constant_predictor_mae,
    exact_bin_accuracy,
    mae_in_bins,
    ordinal_decode,
    quadratic_weighted_kappa,
    target_mae,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
GSM8K = REPO_ROOT.parent / "shared" / "data" / "gsm8k_lengths"


def _three_clusters(seed: int = 0) -> np.ndarray:
    """20 points each around 10, 50 and 100 (spread 1): three clusters nobody can miss."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(c, 1.0, 20) for c in (100.0, 10.0, 50.0)])


# --- equal width ----------------------------------------------------------------------------------------------
def test_equal_width_edges_and_left_closed_bins() -> None:
    y = np.arange(11)  # 0..10
    binner = EqualWidthBinner(5).fit(y)
    np.testing.assert_allclose(binner.bin_edges, [0, 2, 4, 6, 8, 10])
    assert binner.num_bins == 5
    # [0,2) [2,4) [4,6) [6,8) [8,10]: the right end of the train range falls in the last bin.
    np.testing.assert_array_equal(binner.transform(y), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4])
    np.testing.assert_allclose(binner.bin_medians, [0.5, 2.5, 4.5, 6.5, 9.0])
    # Outside the train range: clipped into the end bins.
    np.testing.assert_array_equal(binner.transform([-5, 11, 1e6]), [0, 4, 4])


def test_equal_width_collapse_on_one_outlier_has_low_balance() -> None:
    y = np.concatenate([np.arange(10), [1000]])
    binner = EqualWidthBinner(5).fit(y)
    report = binner.report(y)
    assert report.bin_sizes == [10, 0, 0, 0, 1]
    assert report.balance < 0.3
    # The outlier filter (fit on train) removes the outlier first; then the bins are balanced again.
    keep = OutlierFilter(upper=100).fit(y).mask(y)
    balanced = EqualWidthBinner(5).fit(y[keep]).report(y[keep])
    assert balanced.bin_sizes == [2, 2, 2, 2, 2]
    assert balanced.balance == pytest.approx(1.0)


def test_equal_width_rejects_constant_targets() -> None:
    with pytest.raises(ValueError, match="all train targets are equal"):
        EqualWidthBinner(3).fit([4, 4, 4])


def test_equal_width_log1p_edges_equal_width_in_log_space() -> None:
    y = np.array([0, 1, 3, 7, 15, 31, 63], dtype=float)
    binner = EqualWidthBinner(3, log1p=True).fit(y)
    np.testing.assert_allclose(np.diff(np.log1p(binner.bin_edges)), np.log1p(63) / 3)
    assert binner.transform(y).tolist() == sorted(binner.transform(y).tolist())


# --- quantile -------------------------------------------------------------------------------------------------
def test_quantile_quartiles_on_1_to_100() -> None:
    y = np.arange(1, 101)
    binner = QuantileBinner(4).fit(y)
    np.testing.assert_allclose(binner.bin_edges, [1, 25.75, 50.5, 75.25, 100])  # numpy/pandas linear quantiles
    ids = binner.transform(y)
    assert np.bincount(ids).tolist() == [25, 25, 25, 25]
    np.testing.assert_array_equal(ids[[0, 24, 25, 49, 50, 74, 75, 99]], [0, 0, 1, 1, 2, 2, 3, 3])
    assert binner.report(y).balance == pytest.approx(1.0)


def test_quantile_merges_duplicate_edges_and_leaves_no_empty_bin() -> None:
    y = np.array([3] * 60 + [5] * 20 + list(range(10, 30)))  # 60% of the rows are exactly 3
    binner = QuantileBinner(5).fit(y)
    assert binner.requested_num_bins == 5
    assert binner.num_bins < 5
    assert np.all(np.diff(binner.bin_edges) > 0)
    sizes = np.bincount(binner.transform(y), minlength=binner.num_bins)
    assert np.all(sizes > 0)
    assert sizes[0] == 60  # all the 3s share one bin


def test_quantile_drops_interpolated_empty_bins() -> None:
    binner = QuantileBinner(4).fit([0.0, 10.0])  # linear quantiles 0, 2.5, 5, 7.5, 10 would leave 2 bins empty
    assert np.all(np.bincount(binner.transform([0.0, 10.0]), minlength=binner.num_bins) > 0)
    assert binner.num_bins == 2


# --- manual ---------------------------------------------------------------------------------------------------
def test_manual_edges_are_left_closed_and_clip() -> None:
    binner = ManualBinner([0, 1, 4, 8, 17, 28, 41, 66, 98, 200, 1000]).fit(np.arange(0, 300))
    assert binner.num_bins == 10
    # Boundary values open the next bin ([e_i, e_{i+1})); the last edge stays in the last bin.
    assert binner.transform([0, 1, 3.99, 4, 8, 66, 199.5, 200, 1000]).tolist() == [0, 1, 1, 2, 3, 7, 8, 9, 9]
    assert binner.transform([-3, 5000]).tolist() == [0, 9]
    assert binner.bin_medians[9] == pytest.approx(249.5)  # median of the train rows 200..299 in [200, 1000]
    # A bin with no train row gets its interval midpoint as stand-in median.
    empty = ManualBinner([0, 10, 20, 30]).fit([1, 2, 25])
    assert empty.bin_medians.tolist() == [1.5, 15.0, 25.0]


@pytest.mark.parametrize("edges", [[0, 5, 5, 10], [10, 5, 0], [3], [0, float("nan"), 2], [[0, 1], [2, 3]]])
def test_manual_rejects_invalid_edges(edges: list) -> None:
    with pytest.raises(ValueError):
        ManualBinner(edges)


# --- k-means --------------------------------------------------------------------------------------------------
def test_kmeans_finds_three_clusters_and_orders_ids_by_target() -> None:
    y = _three_clusters()
    binner = KMeansBinner(k_range=(2, 6), seed=0).fit(y)
    assert binner.num_bins == 3
    assert max(binner.selection_scores, key=binner.selection_scores.get) == 3
    ids = binner.transform(y)
    # Data order is 100s, 10s, 50s; ids follow the target: 10s -> 0, 50s -> 1, 100s -> 2.
    np.testing.assert_array_equal(ids, [2] * 20 + [0] * 20 + [1] * 20)
    assert np.all(np.diff(binner.bin_medians) > 0)
    np.testing.assert_allclose(binner.centroids[:, 0], [10, 50, 100], atol=1.0)
    assert binner.bin_edges is None
    report = binner.report(y)
    assert report.silhouette > 0.9 and report.bin_sizes == [20, 20, 20]


def test_kmeans_with_features_uses_train_standardisation() -> None:
    y = np.array([10.0, 11, 12, 10, 11, 12])
    steps = np.array([[1.0], [1], [1], [9], [9], [9]])  # the feature, not the target, splits the rows
    binner = KMeansBinner(k=2, features=["n_steps"]).fit(y, steps)
    ids = binner.transform(y, steps)
    assert len(set(ids[:3])) == 1 and len(set(ids[3:])) == 1 and ids[0] != ids[3]
    # New rows: nearest centroid after the train mean/std, e.g. (11, 8) goes with the n_steps=9 group.
    assert binner.transform([11.0], [[8.0]])[0] == ids[3]
    with pytest.raises(ValueError, match="features"):
        binner.transform(y)
    with pytest.raises(ValueError, match="without features"):
        KMeansBinner(k=2).fit(y, steps)


def test_kmeans_needs_exactly_one_of_k_and_k_range() -> None:
    with pytest.raises(ValueError):
        KMeansBinner()
    with pytest.raises(ValueError):
        KMeansBinner(k=3, k_range=(2, 4))
    with pytest.raises(ValueError):
        KMeansBinner(k_range=(1, 4))


# --- leakage, serialisation -----------------------------------------------------------------------------------
def _fitted_binners(y: np.ndarray) -> list[Binner]:
    return [
        EqualWidthBinner(4).fit(y),
        QuantileBinner(4).fit(y),
        ManualBinner([0, 20, 60, 90, 200]).fit(y),
        KMeansBinner(k_range=(2, 4), seed=0, log1p=True).fit(y),
    ]


def test_transform_never_changes_fitted_state() -> None:
    train = _three_clusters(0)
    rng = np.random.default_rng(1)
    for binner in _fitted_binners(train):
        state_before = json.dumps(binner.to_dict())
        train_ids = binner.transform(train)
        first = binner.transform(rng.uniform(0, 500, 40))  # counts: log1p (k-means) needs > -1
        second = binner.transform(rng.uniform(0, 5, 7))
        assert first.min() >= 0 and first.max() < binner.num_bins and len(second) == 7
        assert json.dumps(binner.to_dict()) == state_before, binner
        np.testing.assert_array_equal(binner.transform(train), train_ids)


def test_to_dict_from_dict_round_trip_gives_identical_transforms() -> None:
    train = _three_clusters(0)
    other = np.random.default_rng(2).uniform(-10, 300, 50)
    for binner in _fitted_binners(train):
        restored = Binner.from_dict(json.loads(json.dumps(binner.to_dict())))
        assert type(restored) is type(binner) and restored.num_bins == binner.num_bins
        np.testing.assert_array_equal(restored.transform(train), binner.transform(train))
        np.testing.assert_array_equal(restored.transform(other), binner.transform(other))
        np.testing.assert_array_equal(restored.bin_medians, binner.bin_medians)
        assert restored.to_dict() == binner.to_dict()


def test_unfitted_binner_refuses_transform_and_serialises_params() -> None:
    binner = QuantileBinner(3)
    with pytest.raises(RuntimeError, match="not fitted"):
        binner.transform([1, 2, 3])
    assert Binner.from_dict(binner.to_dict()).to_dict() == {
        "scheme": "quantile",
        "params": {"num_bins": 3, "log1p": False},
        "state": None,
    }


def test_outlier_filter_quantile_bounds_fit_on_train_and_round_trip() -> None:
    train = np.arange(101, dtype=float)  # 0..100
    filt = OutlierFilter(lower_quantile=0.05, upper_quantile=0.95).fit(train)
    assert (filt.low_bound, filt.high_bound) == (5.0, 95.0)
    assert filt.mask([4, 5, 50, 95, 96]).tolist() == [False, True, True, True, False]
    restored = OutlierFilter.from_dict(json.loads(json.dumps(filt.to_dict())))
    assert restored.mask([4, 5, 95, 96]).tolist() == [False, True, True, False]
    with pytest.raises(ValueError):
        OutlierFilter(upper_quantile=0.9, upper=10)


# --- build_binner ---------------------------------------------------------------------------------------------
def test_build_binner_from_yaml_like_specs() -> None:
    assert isinstance(build_binner({"scheme": "quantile", "num_bins": 4}), QuantileBinner)
    assert build_binner({"scheme": "manual", "edges": [0, 1, 4]}).num_bins == 2
    kmeans = build_binner({"scheme": "kmeans", "k_range": [2, 5], "seed": 3, "log1p": True})
    assert isinstance(kmeans, KMeansBinner) and kmeans.k_range == [2, 5] and kmeans.seed == 3
    with pytest.raises(ValueError, match="unknown binning scheme 'kmean'"):
        build_binner({"scheme": "kmean", "k": 3})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['bins'\]"):
        build_binner({"scheme": "quantile", "bins": 4})
    with pytest.raises(ValueError, match="needs field"):
        build_binner({"scheme": "equal_width"})
    with pytest.raises(ValueError, match="needs a 'scheme'"):
        build_binner({"num_bins": 4})


# --- metrics --------------------------------------------------------------------------------------------------
def test_target_mae_and_constant_predictor() -> None:
    medians = [10.0, 50.0, 100.0]
    assert target_mae([12, 40, 100, 0], [0, 1, 2, 1], medians) == pytest.approx((2 + 10 + 0 + 50) / 4)
    with pytest.raises(ValueError):
        target_mae([1, 2], [0, 3], medians)
    # Train median of [1, 2, 3, 100] is 2.5.
    assert constant_predictor_mae([1, 2, 3, 100], [2.5, 0.5, 10.5]) == pytest.approx((0 + 2 + 8) / 3)


def test_bin_distance_and_accuracy() -> None:
    assert mae_in_bins([0, 1, 2, 3], [0, 2, 0, 3]) == pytest.approx(0.75)
    assert exact_bin_accuracy([0, 1, 2, 3], [0, 2, 0, 3]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        mae_in_bins([0, 1], [0.5, 1])


def test_ordinal_decode_rounds_half_up_and_clips() -> None:
    decoded = ordinal_decode([-3.2, 0.49, 0.5, 1.5, 2.5, 2.51, 9.0], num_bins=4)
    assert decoded.tolist() == [0, 0, 1, 2, 3, 3, 3]
    assert decoded.dtype == np.int64


def test_quadratic_weighted_kappa_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 5, 200)
    pred = np.clip(true + rng.integers(-1, 2, 200), 0, 4)
    assert quadratic_weighted_kappa(true, pred) == pytest.approx(cohen_kappa_score(true, pred, weights="quadratic"))
    assert quadratic_weighted_kappa(true, true) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([0, 1, 1], [0, 1, 2], num_bins=4) == pytest.approx(
        cohen_kappa_score([0, 1, 1], [0, 1, 2], labels=[0, 1, 2, 3], weights="quadratic")
    )


def test_balance_score_bounds() -> None:
    assert balance_score([5, 5, 5]) == pytest.approx(1.0)
    assert balance_score([15, 0, 0]) == pytest.approx(0.0)
    assert balance_score([7]) == 1.0


# --- packaging, real data -------------------------------------------------------------------------------------
def test_binning_and_numeric_metrics_do_not_import_torch() -> None:
    code = ("import sys, datamodules.binning, fenlei.metrics; "
            "assert 'torch' not in sys.modules, 'binning or metrics imported torch'; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.skipif(not (GSM8K / "train.jsonl").exists(), reason="../shared/data/gsm8k_lengths not present")
def test_gsm8k_train_quartile_bins_match_source_md() -> None:
    with open(GSM8K / "train.jsonl", encoding="utf-8") as handle:
        labels = np.array([json.loads(line)["label"] for line in handle if line.strip()], dtype=float)
    assert len(labels) == 7473
    binner = QuantileBinner(4).fit(labels)
    np.testing.assert_allclose(binner.bin_edges[1:-1], [32, 47, 66], atol=1.0)  # SOURCE.md: 32 / 47 / 66
    assert binner.report(labels, silhouette=False).balance > 0.99
