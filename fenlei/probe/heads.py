"""Probe heads on cached features: logistic regression (scikit-learn) and a one-hidden-layer MLP (torch).

Both standardise the features first (fitted on train only): LM hidden states have a few dimensions with huge
magnitudes ("massive activations"), which otherwise dominate an L2-regularised linear model and slow L-BFGS.
``class_weight="balanced"`` weights each class by ``n / (k * n_c)`` in both heads.
"""

from __future__ import annotations

import time
from typing import Any, Literal, Optional

import numpy as np

HeadName = Literal["logreg", "mlp"]


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
        if kind not in ("logreg", "mlp"):
            raise ValueError(f"unknown head {kind!r}; choose logreg or mlp")
        self.kind, self.num_classes, self.class_weight = kind, num_classes, class_weight
        self.c, self.hidden, self.epochs, self.lr = c, hidden, epochs, lr
        self.weight_decay, self.dropout, self.seed = weight_decay, dropout, seed
        self.fit_seconds = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> StandardisedHead:
        start = time.perf_counter()
        self.mean = x.mean(0)
        self.std = x.std(0) + 1e-6
        z = (x - self.mean) / self.std
        if self.kind == "logreg":
            self._fit_logreg(z, y)
        else:
            self._fit_mlp(z, y)
        self.fit_seconds = time.perf_counter() - start
        return self

    def _fit_logreg(self, z: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=self.c, max_iter=2000, class_weight=self.class_weight)
        self.model.fit(z, y)

    def _fit_mlp(self, z: np.ndarray, y: np.ndarray) -> None:
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

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.std
        if self.kind == "logreg":
            probs = np.zeros((len(z), self.num_classes))
            probs[:, self.model.classes_] = self.model.predict_proba(z)  # classes absent from train stay 0
            return probs
        import torch

        with torch.no_grad():
            return torch.softmax(self.model(torch.tensor(z, dtype=torch.float32)), -1).numpy()


def classification_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy and macro-F1 (scikit-learn: over the classes present in y_true or y_pred)."""
    from sklearn.metrics import accuracy_score

    from fenlei.metrics import macro_f1

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": macro_f1(y_true, y_pred),
        "num_examples": int(len(y_true)),
    }
