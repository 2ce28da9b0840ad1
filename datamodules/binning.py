"""Turn a numeric target (e.g. answer word count) into ordinal bin ids, fitted on train only.

Why a class per scheme with one interface: the DataModule must bin train, validation, test and prediction data
with *the same* thresholds, so a binner is fitted once on train, serialised with the run (``to_dict``) and
restored later (``from_dict``). ``transform`` never changes fitted state, so no test information leaks into
the bins.

Bin convention for the edge-based binners (equal-width, quantile, manual): bins are **left-closed,
right-open** ``[e_i, e_{i+1})``, except that the last bin also holds its right edge. Values below the first
edge go to bin 0 and values above the last edge to the last bin (clipped), because a model must still get a
label for a test value that is outside the train range.

NumPy and scikit-learn only: this module must stay importable without torch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

__all__ = [
    "SCHEMES",
    "build_binner",
    "Binner",
    "BinningReport",
    "EdgeBinner",
    "EqualWidthBinner",
    "KMeansBinner",
    "ManualBinner",
    "OutlierFilter",
    "QuantileBinner",
    "balance_score",
    "binner_from_dict",
]

# Above this many rows, silhouette scores are computed on a seeded sample (the exact score is O(n^2) memory/time).
SILHOUETTE_SAMPLE_SIZE = 3000


def _as_targets(targets: Any) -> np.ndarray:
    """Validate a 1-D finite numeric target array and return it as float64."""
    array = np.asarray(targets, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"targets must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("targets must not be empty")
    if not np.all(np.isfinite(array)):
        raise ValueError("targets contain NaN or infinite values")
    return array


def _maybe_log1p(values: np.ndarray, log1p: bool) -> np.ndarray:
    """Apply log1p when asked; counts like word lengths are right-skewed, log1p spreads the short ones out."""
    if not log1p:
        return values
    if np.any(values <= -1.0):
        raise ValueError("log1p needs targets > -1")
    return np.log1p(values)


def _silhouette(points: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """Silhouette score, or None where it is undefined (fewer than 2 or more than n-1 distinct labels)."""
    points = points.reshape(len(points), -1)
    num_labels = len(np.unique(labels))
    if num_labels < 2 or num_labels > len(points) - 1:
        return None
    sample_size = SILHOUETTE_SAMPLE_SIZE if len(points) > SILHOUETTE_SAMPLE_SIZE else None
    return float(silhouette_score(points, labels, sample_size=sample_size, random_state=seed))


def balance_score(bin_sizes: Sequence[int]) -> float:
    """Normalised entropy of the bin sizes: 1 = all bins equally full, near 0 = (almost) everything in one bin.

    Empty bins count: they lower the score, which is the point (a collapsed binning is a bad label set).
    A single bin scores 1.0 (trivially balanced, but also useless; check ``num_bins``).
    """
    sizes = np.asarray(bin_sizes, dtype=np.float64)
    if len(sizes) <= 1:
        return 1.0
    total = sizes.sum()
    if total <= 0:
        return 0.0
    p = sizes[sizes > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(sizes)))


@dataclass
class BinningReport:
    """What a binning looks like on some data: use it to compare schemes before training on them."""

    scheme: str
    num_bins: int
    bin_sizes: list[int]
    balance: float
    silhouette: float | None
    bin_medians: list[float]
    bin_edges: list[float] | None
    centroids: list[list[float]] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for a run's summary)."""
        return asdict(self)


class Binner:
    """Common interface. Subclasses implement ``_fit`` (set state) and ``_assign`` (state -> bin ids).

    Attributes after ``fit``: ``num_bins`` (the effective number of bins, may be below the requested one for
    quantile binning), ``bin_medians`` (median train target per bin, in original units: the value a regression
    of the bin id back to the target uses), ``bin_edges`` (``num_bins + 1`` edges in original units, or None
    for k-means whose bins are not intervals when extra features are used).
    """

    scheme: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Binner]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.scheme:
            Binner.registry[cls.scheme] = cls

    def __init__(self, log1p: bool = False) -> None:
        self.log1p = bool(log1p)
        self.bin_medians: np.ndarray | None = None
        self.bin_edges: np.ndarray | None = None
        self._num_bins: int | None = None

    # --- public interface -------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.bin_medians is not None

    @property
    def num_bins(self) -> int:
        """Effective number of bins after fitting (the requested number before)."""
        if self._num_bins is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted")
        return self._num_bins

    def fit(self, targets: Any, features: Any = None) -> Binner:
        """Fit on train targets (and extra feature columns where the scheme uses them). Returns self."""
        y = _as_targets(targets)
        self._fit(y, self._check_features(features, len(y)))
        ids = self._assign(y, self._check_features(features, len(y)))
        self.bin_medians = self._medians(y, ids)
        return self

    def transform(self, targets: Any, features: Any = None) -> np.ndarray:
        """Bin ids (int64, 0..num_bins-1) for any data, using the train-fitted state only."""
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() on train targets first")
        y = _as_targets(targets)
        return self._assign(y, self._check_features(features, len(y))).astype(np.int64)

    def fit_transform(self, targets: Any, features: Any = None) -> np.ndarray:
        return self.fit(targets, features).transform(targets, features)

    def report(self, targets: Any, features: Any = None, silhouette: bool = True, seed: int = 0) -> BinningReport:
        """Bin sizes, balance and silhouette of this (fitted) binning on ``targets`` (train or any split).

        For edge schemes the silhouette is measured on the 1-D target (log1p'd when ``log1p``), i.e. how well
        the bins separate the target itself.
        """
        y = _as_targets(targets)
        feats = self._check_features(features, len(y))
        ids = self.transform(y, feats)
        sizes = np.bincount(ids, minlength=self.num_bins).tolist()
        score = self._silhouette(y, feats, ids, seed) if silhouette else None
        centroids = getattr(self, "centroids", None)
        return BinningReport(
            scheme=self.scheme,
            num_bins=self.num_bins,
            bin_sizes=[int(s) for s in sizes],
            balance=balance_score(sizes),
            silhouette=score,
            bin_medians=[float(m) for m in self.bin_medians],
            bin_edges=None if self.bin_edges is None else [float(e) for e in self.bin_edges],
            centroids=None if centroids is None else np.asarray(centroids).tolist(),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"scheme", "params", "state"}``: params rebuild the object, state the fit."""
        state = None
        if self.fitted:
            state = {"num_bins": self.num_bins, "bin_medians": self.bin_medians.tolist(), **self._state()}
            state["bin_edges"] = None if self.bin_edges is None else self.bin_edges.tolist()
        return {"scheme": self.scheme, "params": self._params(), "state": state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Binner:
        """Rebuild any binner saved by ``to_dict`` (dispatches on ``scheme``; no refit, so no data needed)."""
        scheme = data.get("scheme")
        if scheme not in Binner.registry:
            raise ValueError(f"unknown binning scheme {scheme!r}; known: {sorted(Binner.registry)}")
        target_cls = Binner.registry[scheme]
        if cls is not Binner and not issubclass(target_cls, cls):
            raise ValueError(f"{cls.__name__}.from_dict got scheme {scheme!r}")
        binner = target_cls(**data.get("params", {}))
        state = data.get("state")
        if state is not None:
            binner._num_bins = int(state["num_bins"])
            binner.bin_medians = np.asarray(state["bin_medians"], dtype=np.float64)
            edges = state.get("bin_edges")
            binner.bin_edges = None if edges is None else np.asarray(edges, dtype=np.float64)
            binner._load_state(state)
        return binner

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({params})"

    # --- hooks ----------------------------------------------------------------------------------------------
    def _fit(self, y: np.ndarray, features: np.ndarray | None) -> None:
        raise NotImplementedError

    def _assign(self, y: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _params(self) -> dict[str, Any]:
        return {"log1p": self.log1p}

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        """Restore scheme-specific state (edges and medians are restored by the base class)."""

    def _check_features(self, features: Any, n: int) -> np.ndarray | None:
        if features is not None:
            raise ValueError(f"{type(self).__name__} does not use extra features; pass features=None")
        return None

    def _silhouette(self, y: np.ndarray, features: np.ndarray | None, ids: np.ndarray, seed: int) -> float | None:
        return _silhouette(_maybe_log1p(y, self.log1p), ids, seed)

    def _medians(self, y: np.ndarray, ids: np.ndarray) -> np.ndarray:
        medians = np.empty(self.num_bins, dtype=np.float64)
        for b in range(self.num_bins):
            members = y[ids == b]
            medians[b] = np.median(members) if len(members) else self._empty_bin_value(b)
        return medians

    def _empty_bin_value(self, b: int) -> float:
        """Stand-in median for a bin with no train member (only possible for manual edges)."""
        return float((self.bin_edges[b] + self.bin_edges[b + 1]) / 2)


class EdgeBinner(Binner):
    """Bins are intervals between sorted edges (left-closed, last bin closed; out-of-range values clipped)."""

    def _assign(self, y: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        inner = self.bin_edges[1:-1]
        # side="right": a value equal to an inner edge goes to the bin that starts there (left-closed bins).
        return np.searchsorted(inner, y, side="right").astype(np.int64)

    def _set_edges(self, edges: np.ndarray) -> None:
        self.bin_edges = np.asarray(edges, dtype=np.float64)
        self._num_bins = len(self.bin_edges) - 1


def _positive_int(value: Any, name: str) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class EqualWidthBinner(EdgeBinner):
    """``num_bins`` equal-width bins over the train range (like ``pd.cut(train, num_bins)``).

    With ``log1p`` the bins are equal-width in log1p space (edges are still stored in original units).
    Known weakness: one huge outlier stretches the range and collapses nearly everything into bin 0 (see
    ``BinningReport.balance``); combine with ``OutlierFilter`` or use quantile bins.
    """

    scheme = "equal_width"

    def __init__(self, num_bins: int, log1p: bool = False) -> None:
        super().__init__(log1p=log1p)
        self.requested_num_bins = _positive_int(num_bins, "num_bins")

    def _fit(self, y: np.ndarray, features: np.ndarray | None) -> None:
        z = _maybe_log1p(y, self.log1p)
        low, high = float(z.min()), float(z.max())
        if low == high:
            raise ValueError("cannot make equal-width bins: all train targets are equal")
        edges = np.linspace(low, high, self.requested_num_bins + 1)
        if self.log1p:
            edges = np.expm1(edges)
        edges[0], edges[-1] = y.min(), y.max()  # exact train range despite expm1 rounding
        self._set_edges(edges)

    def _params(self) -> dict[str, Any]:
        return {"num_bins": self.requested_num_bins, **super()._params()}


class QuantileBinner(EdgeBinner):
    """Equal-frequency bins from train quantiles (like ``pd.qcut(train, num_bins, duplicates="drop")``).

    Heavily repeated values (e.g. many answers of exactly 3 words) give duplicate quantile edges; those are
    merged, and any bin left without train members is merged into its neighbour. So every bin has train
    members, and ``num_bins`` can end up *smaller* than requested (``requested_num_bins`` keeps the asked one).
    Quantiles are monotone-invariant, so ``log1p`` does not change these bins (accepted for a uniform config).
    """

    scheme = "quantile"

    def __init__(self, num_bins: int, log1p: bool = False) -> None:
        super().__init__(log1p=log1p)
        self.requested_num_bins = _positive_int(num_bins, "num_bins")

    def _fit(self, y: np.ndarray, features: np.ndarray | None) -> None:
        edges = np.unique(np.quantile(y, np.linspace(0.0, 1.0, self.requested_num_bins + 1)))
        if len(edges) == 1:  # constant targets: one bin
            edges = np.array([edges[0], edges[0]])
        self._set_edges(edges)
        # Interpolated quantiles can still leave a bin empty (e.g. y=[0, 10] with 4 bins): drop the edge that
        # opens an empty bin until none is left.
        while self.num_bins > 1:
            counts = np.bincount(self._assign(y, None), minlength=self.num_bins)
            empty = np.flatnonzero(counts == 0)
            if len(empty) == 0:
                break
            b = int(empty[0])
            drop = b if b > 0 else 1  # bin b spans edges[b]..edges[b+1]; removing an inner edge merges it
            self._set_edges(np.delete(self.bin_edges, drop))

    def _params(self) -> dict[str, Any]:
        return {"num_bins": self.requested_num_bins, **super()._params()}


class ManualBinner(EdgeBinner):
    """Hand-set edges, e.g. ``[0, 1, 4, 8, 17, 28, 41, 66, 98, 200, 1000]`` (``len(edges) - 1`` bins).

    Edges must be strictly increasing. Bins are ``[e_i, e_{i+1})`` with the last bin closed; values outside
    ``[edges[0], edges[-1]]`` are clipped into the end bins. ``fit`` only computes the per-bin train medians
    (an empty bin gets its interval midpoint as stand-in median).
    """

    scheme = "manual"

    def __init__(self, edges: Sequence[float], log1p: bool = False) -> None:
        super().__init__(log1p=log1p)
        array = np.asarray(edges, dtype=np.float64)
        if array.ndim != 1 or len(array) < 2:
            raise ValueError(f"edges must be a list of at least 2 numbers, got {edges!r}")
        if not np.all(np.isfinite(array)):
            raise ValueError("edges must be finite")
        if not np.all(np.diff(array) > 0):
            raise ValueError(f"edges must be strictly increasing, got {list(edges)}")
        self.edges = [float(e) for e in array]
        self._set_edges(array)

    def _fit(self, y: np.ndarray, features: np.ndarray | None) -> None:
        self._set_edges(np.asarray(self.edges))

    def _params(self) -> dict[str, Any]:
        return {"edges": list(self.edges), **super()._params()}


class KMeansBinner(Binner):
    """k-means on standardised ``[target (log1p'd if asked), *extra feature columns]``, fitted on train.

    ``k`` fixes the number of clusters; otherwise ``k_range = (low, high)`` (inclusive) picks the k with the
    best silhouette on train. Cluster ids are re-ordered by mean train target, so bin id order follows the
    target (needed for ordinal losses and QWK). At transform time each row goes to the nearest centroid after
    the *same* standardisation (train mean/std), never refitted.

    ``features`` names the extra columns (e.g. ``["n_steps"]``) that ``fit``/``transform`` then expect as an
    ``(n, len(features))`` array in that order; the names are kept for the config and the saved state.
    ``bin_edges`` is None (clusters are not target intervals once features are used); ``centroids`` holds the
    centres in original units (target column first).
    """

    scheme = "kmeans"

    def __init__(
        self,
        k: int | None = None,
        k_range: Sequence[int] | None = None,
        seed: int = 0,
        features: Sequence[str] = (),
        log1p: bool = False,
        n_init: int = 10,
    ) -> None:
        super().__init__(log1p=log1p)
        if (k is None) == (k_range is None):
            raise ValueError("give exactly one of k (fixed) or k_range=(low, high) (chosen by silhouette)")
        if k is not None and (int(k) != k or k < 1):
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k_range is not None:
            if len(k_range) != 2 or not 2 <= int(k_range[0]) <= int(k_range[1]):
                raise ValueError(f"k_range must be (low, high) with 2 <= low <= high, got {k_range!r}")
            k_range = [int(k_range[0]), int(k_range[1])]
        self.k = None if k is None else int(k)
        self.k_range = k_range
        self.seed = int(seed)
        self.features = [str(f) for f in features]
        self.n_init = int(n_init)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.centroids_std: np.ndarray | None = None
        self.selection_scores: dict[int, float] | None = None

    @property
    def centroids(self) -> np.ndarray | None:
        """Cluster centres in original units of each column (target column in log1p units if ``log1p``)."""
        if self.centroids_std is None:
            return None
        return self.centroids_std * self.scale + self.mean

    def _check_features(self, features: Any, n: int) -> np.ndarray | None:
        if not self.features:
            if features is not None:
                raise ValueError("this KMeansBinner was configured without features; pass features=None")
            return None
        if features is None:
            raise ValueError(f"KMeansBinner expects features {self.features} as an (n, {len(self.features)}) array")
        array = np.asarray(features, dtype=np.float64)
        if array.ndim == 1:
            array = array[:, None]
        if array.shape != (n, len(self.features)):
            raise ValueError(f"features must have shape ({n}, {len(self.features)}), got {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError("features contain NaN or infinite values")
        return array

    def _matrix(self, y: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        columns = [_maybe_log1p(y, self.log1p)[:, None]]
        if features is not None:
            columns.append(features)
        return np.hstack(columns)

    def _standardise(self, matrix: np.ndarray) -> np.ndarray:
        return (matrix - self.mean) / self.scale

    def _fit(self, y: np.ndarray, features: np.ndarray | None) -> None:
        raw = self._matrix(y, features)
        self.mean = raw.mean(axis=0)
        std = raw.std(axis=0)
        self.scale = np.where(std > 0, std, 1.0)  # a constant column carries no information; keep it at 0
        x = self._standardise(raw)
        distinct = len(np.unique(x, axis=0))
        if self.k is not None:
            if self.k > distinct:
                raise ValueError(f"k={self.k} exceeds the {distinct} distinct train points")
            candidates = [self.k]
        else:
            candidates = [k for k in range(self.k_range[0], self.k_range[1] + 1) if k <= min(distinct, len(x) - 1)]
            if not candidates:
                raise ValueError(f"no k in {self.k_range} fits {len(x)} train rows ({distinct} distinct)")
        best: tuple[float, KMeans] | None = None
        scores: dict[int, float] = {}
        for k in candidates:
            model = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(x)
            if len(candidates) == 1:
                best = (0.0, model)
                break
            score = _silhouette(x, model.labels_, self.seed)
            scores[k] = float("nan") if score is None else score
            if score is not None and (best is None or score > best[0]):
                best = (score, model)
        if best is None:
            raise ValueError("silhouette undefined for every k in k_range")
        model = best[1]
        self.selection_scores = scores or None
        # Re-order clusters by mean train target so bin id order follows the target.
        labels = model.labels_
        mean_target = np.array([y[labels == c].mean() for c in range(model.n_clusters)])
        order = np.argsort(mean_target, kind="stable")
        self.centroids_std = model.cluster_centers_[order]
        self._num_bins = int(model.n_clusters)
        self.bin_edges = None

    def _assign(self, y: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        x = self._standardise(self._matrix(y, features))
        distances = ((x[:, None, :] - self.centroids_std[None, :, :]) ** 2).sum(axis=-1)
        return distances.argmin(axis=1).astype(np.int64)

    def _empty_bin_value(self, b: int) -> float:
        target = float(self.centroids[b, 0])
        return float(np.expm1(target)) if self.log1p else target

    def _silhouette(self, y: np.ndarray, features: np.ndarray | None, ids: np.ndarray, seed: int) -> float | None:
        return _silhouette(self._standardise(self._matrix(y, features)), ids, seed)

    def _params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "k_range": self.k_range,
            "seed": self.seed,
            "features": list(self.features),
            "n_init": self.n_init,
            **super()._params(),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "centroids_std": self.centroids_std.tolist(),
            "selection_scores": None
            if self.selection_scores is None
            else {str(k): v for k, v in self.selection_scores.items()},
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.scale = np.asarray(state["scale"], dtype=np.float64)
        self.centroids_std = np.asarray(state["centroids_std"], dtype=np.float64)
        scores = state.get("selection_scores")
        self.selection_scores = None if scores is None else {int(k): float(v) for k, v in scores.items()}


def binner_from_dict(data: dict[str, Any]) -> Binner:
    """Restore a binner saved with ``to_dict`` (alias of ``Binner.from_dict``)."""
    return Binner.from_dict(data)


class OutlierFilter:
    """Drop extreme train targets before fitting a binner (bounds fitted on train, then frozen).

    Give quantiles (``lower_quantile=0.0, upper_quantile=0.99``: bounds become those train quantiles) or fixed
    values (``lower=..., upper=...``), not both for the same side. ``mask(targets)`` says which rows to keep
    (inclusive bounds). Meant for *train* rows only: test rows are never dropped, the binner clips them.
    """

    def __init__(
        self,
        lower_quantile: float | None = None,
        upper_quantile: float | None = None,
        lower: float | None = None,
        upper: float | None = None,
    ) -> None:
        if lower_quantile is not None and lower is not None:
            raise ValueError("give lower_quantile or lower, not both")
        if upper_quantile is not None and upper is not None:
            raise ValueError("give upper_quantile or upper, not both")
        for name, q in (("lower_quantile", lower_quantile), ("upper_quantile", upper_quantile)):
            if q is not None and not 0.0 <= q <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {q}")
        self.lower_quantile = lower_quantile
        self.upper_quantile = upper_quantile
        self.lower = lower
        self.upper = upper
        self.low_bound: float | None = None
        self.high_bound: float | None = None
        self.fitted = False

    def fit(self, targets: Any) -> OutlierFilter:
        y = _as_targets(targets)
        self.low_bound = float(np.quantile(y, self.lower_quantile)) if self.lower_quantile is not None else self.lower
        self.high_bound = float(np.quantile(y, self.upper_quantile)) if self.upper_quantile is not None else self.upper
        if self.low_bound is not None and self.high_bound is not None and self.low_bound > self.high_bound:
            raise ValueError(f"lower bound {self.low_bound} is above upper bound {self.high_bound}")
        self.fitted = True
        return self

    def mask(self, targets: Any) -> np.ndarray:
        """Boolean keep-mask (True = inside the fitted bounds)."""
        if not self.fitted:
            raise RuntimeError("OutlierFilter is not fitted")
        y = _as_targets(targets)
        keep = np.ones(len(y), dtype=bool)
        if self.low_bound is not None:
            keep &= y >= self.low_bound
        if self.high_bound is not None:
            keep &= y <= self.high_bound
        return keep

    def to_dict(self) -> dict[str, Any]:
        return {
            "lower_quantile": self.lower_quantile,
            "upper_quantile": self.upper_quantile,
            "lower": self.lower,
            "upper": self.upper,
            "state": {"low_bound": self.low_bound, "high_bound": self.high_bound} if self.fitted else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutlierFilter:
        params = {k: data.get(k) for k in ("lower_quantile", "upper_quantile", "lower", "upper")}
        result = cls(**params)
        state = data.get("state")
        if state is not None:
            result.low_bound, result.high_bound = state["low_bound"], state["high_bound"]
            result.fitted = True
        return result


SCHEMES: dict[str, type[Binner]] = {
    "equal_width": EqualWidthBinner,
    "quantile": QuantileBinner,
    "manual": ManualBinner,
    "kmeans": KMeansBinner,
}


def build_binner(spec: dict[str, Any]) -> Binner:
    """Make an (unfitted) binner from a config dict: ``scheme`` plus that scheme's constructor arguments.

    Raises ValueError naming the known schemes / allowed fields, so a typo in YAML fails loudly at startup
    instead of silently falling back to a default.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"binning spec must be a dict, got {type(spec).__name__}")
    if "scheme" not in spec:
        raise ValueError(f"binning spec needs a 'scheme' (one of {sorted(SCHEMES)}), got keys {sorted(spec)}")
    scheme = spec["scheme"]
    if scheme not in SCHEMES:
        raise ValueError(f"unknown binning scheme {scheme!r}; known: {sorted(SCHEMES)}")
    cls = SCHEMES[scheme]
    parameters = inspect.signature(cls.__init__).parameters
    allowed = [name for name in parameters if name != "self"]
    kwargs = {k: v for k, v in spec.items() if k != "scheme"}
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for binning scheme {scheme!r}; allowed: {allowed}")
    missing = [name for name in allowed if parameters[name].default is inspect.Parameter.empty and name not in kwargs]
    if missing:
        raise ValueError(f"binning scheme {scheme!r} needs field(s) {missing}")
    return cls(**kwargs)
