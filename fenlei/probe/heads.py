"""Probe heads on cached features: logistic regression (scikit-learn) and a one-hidden-layer MLP (torch).

Both standardise the features first (fitted on train only): LM hidden states have a few dimensions with huge
magnitudes ("massive activations"), which otherwise dominate an L2-regularised linear model and slow L-BFGS.
``class_weight="balanced"`` weights each class by ``n / (k * n_c)`` in both heads.

A fitted head is plain arrays (:class:`HeadArrays`: the standardisation, then the logistic regression's
``coef``/``intercept`` or the MLP's two layers), and its logits are computed from them in NumPy, during the fit's
own evaluation and after loading a saved probe alike: what is saved is exactly what was scored, and loading
unpickles nothing (``np.load(allow_pickle=False)``).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional

import numpy as np

HeadName = Literal["logreg", "mlp"]
HEAD_KINDS = ("logreg", "mlp")
# The array names of each head kind in a saved head (``head.npz``), beside the standardisation's mean and std.
HEAD_PARAMETERS = {"logreg": ("coef", "intercept", "classes"), "mlp": ("w1", "b1", "w2", "b2")}
# Logit of a class the logistic regression never saw in train (probability 0 after softmax, yet finite for the
# temperature fit).
ABSENT_CLASS_LOGIT = -1e9


class HeadArrays:
    """A fitted head as arrays: ``logits(x)`` standardises ``x`` (``[N, H]``) and applies the head, in NumPy."""

    def __init__(self, kind: str, num_classes: int, arrays: dict[str, np.ndarray]) -> None:
        if kind not in HEAD_PARAMETERS:
            raise ValueError(f"unknown head {kind!r}; choose {' or '.join(HEAD_KINDS)}")
        missing = [name for name in ("mean", "std", *HEAD_PARAMETERS[kind]) if name not in arrays]
        if missing:
            raise ValueError(f"a {kind} head needs the arrays {', '.join(missing)}")
        self.kind, self.num_classes = kind, int(num_classes)
        self.arrays = {name: np.asarray(arrays[name]) for name in ("mean", "std", *HEAD_PARAMETERS[kind])}
        self._check_shapes()

    @property
    def dim(self) -> int:
        return int(self.arrays["mean"].shape[0])

    def _check_shapes(self) -> None:
        a, h, c = self.arrays, self.dim, self.num_classes
        expected: dict[str, tuple[int, ...]] = {"mean": (h,), "std": (h,)}
        if self.kind == "logreg":
            seen = int(a["classes"].shape[0]) if a["classes"].ndim == 1 else -1
            rows = 1 if seen == 2 else seen  # scikit-learn keeps one row of weights for two classes
            expected |= {"classes": (seen,), "coef": (rows, h), "intercept": (rows,)}
            if seen < 2 or not np.issubdtype(a["classes"].dtype, np.integer) or a["classes"].min() < 0 \
                    or a["classes"].max() >= c:
                raise ValueError(f"classes must be 2 or more class ids in 0..{c - 1}, got {a['classes'].tolist()}")
        else:
            hidden = int(a["w1"].shape[0]) if a["w1"].ndim == 2 else -1
            expected |= {"w1": (hidden, h), "b1": (hidden,), "w2": (c, hidden), "b2": (c,)}
        for name, shape in expected.items():
            if tuple(a[name].shape) != shape:
                raise ValueError(f"array {name!r} has shape {list(a[name].shape)}, expected {list(shape)}")
            if not np.issubdtype(a[name].dtype, np.number) or not np.all(np.isfinite(a[name])):
                raise ValueError(f"array {name!r} must hold finite numbers")
        if np.any(a["std"] <= 0):
            raise ValueError("array 'std' must be positive")

    def logits(self, x: np.ndarray) -> np.ndarray:
        """``[N, num_classes]`` float64 logits; ``softmax`` of them is the head's ``predict_proba``."""
        a = self.arrays
        z = (np.asarray(x, dtype=np.float64) - a["mean"]) / a["std"]
        if self.kind == "mlp":
            from scipy.special import erf

            h = z @ a["w1"].T.astype(np.float64) + a["b1"]
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))  # torch's nn.GELU (exact, erf)
            return h @ a["w2"].T.astype(np.float64) + a["b2"]
        scores = z @ a["coef"].T.astype(np.float64) + a["intercept"]
        if len(a["classes"]) == 2:  # binary: scikit-learn's one score s is the logit of classes[1] against 0
            scores = np.concatenate([np.zeros_like(scores[:, :1]), scores], axis=1)
        out = np.full((len(z), self.num_classes), ABSENT_CLASS_LOGIT)
        out[:, a["classes"]] = scores  # classes absent from train keep probability 0
        return out

    def predict_proba(self, x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
        from fenlei.numerics import softmax

        return softmax(self.logits(x), temperature)


def _balanced_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    weights = np.zeros(num_classes)
    present = counts > 0
    weights[present] = len(y) / (present.sum() * counts[present])
    return weights


class StandardisedHead:
    """Fit on ``(X, y)``; ``predict_proba(X)`` gives ``[N, num_classes]`` (columns = class ids 0..C-1)."""

    def __init__(self, kind: HeadName, num_classes: int, class_weight: Optional[str] = None, c: float = 1.0,
                 hidden: int = 256, epochs: int = 200, lr: float = 1e-3, weight_decay: float = 1e-4,
                 dropout: float = 0.1, seed: int = 0) -> None:
        if kind not in HEAD_KINDS:
            raise ValueError(f"unknown head {kind!r}; choose {' or '.join(HEAD_KINDS)}")
        self.kind, self.num_classes, self.class_weight = kind, num_classes, class_weight
        self.c, self.hidden, self.epochs, self.lr = c, hidden, epochs, lr
        self.weight_decay, self.dropout, self.seed = weight_decay, dropout, seed
        self.fit_seconds = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> StandardisedHead:
        start = time.perf_counter()
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-6
        z = (x - self.mean) / self.std
        params = self._fit_logreg(z, y) if self.kind == "logreg" else self._fit_mlp(z, y)
        self.head = HeadArrays(self.kind, self.num_classes, {"mean": self.mean, "std": self.std, **params})
        self.fit_seconds = time.perf_counter() - start
        return self

    def _fit_logreg(self, z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=self.c, max_iter=2000, class_weight=self.class_weight)
        self.model.fit(z, y)
        return {"coef": self.model.coef_, "intercept": self.model.intercept_,
                "classes": self.model.classes_.astype(np.int64)}

    def _fit_mlp(self, z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self.model = nn.Sequential(nn.Linear(z.shape[1], self.hidden), nn.GELU(), nn.Dropout(self.dropout),
                                   nn.Linear(self.hidden, self.num_classes))
        weight = None
        if self.class_weight == "balanced":
            weight = torch.tensor(_balanced_weights(y, self.num_classes), dtype=torch.float32)
        loss_fn = nn.CrossEntropyLoss(weight=weight)
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt, yt = torch.tensor(z, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
        generator = torch.Generator().manual_seed(self.seed)
        batch = 256
        self.model.train()
        for _ in range(self.epochs):
            perm = torch.randperm(len(xt), generator=generator)
            for s in range(0, len(xt), batch):
                idx = perm[s : s + batch]
                loss = loss_fn(self.model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.model.eval()
        first, last = self.model[0], self.model[3]
        return {name: t.detach().numpy().copy() for name, t in
                (("w1", first.weight), ("b1", first.bias), ("w2", last.weight), ("b2", last.bias))}

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.head.logits(x)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.head.predict_proba(x)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1 (scikit-learn: over the classes present in y_true or y_pred), the worst class's F1 (over
    the classes of y_true) and the most frequent prediction's share (a collapsed head shows there)."""
    from sklearn.metrics import accuracy_score

    from fenlei.metrics import macro_f1, worst_class_f1
    from fenlei.predictions import top_answer_share

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": macro_f1(y_true, y_pred),
        "worst_class_f1": worst_class_f1(y_true, y_pred),
        "top_prediction_share": top_answer_share(np.asarray(y_pred).tolist()),
        "num_examples": int(len(y_true)),
    }
