"""Per-field metrics of a decoded answer: one tally per decoding and stage, accumulated over an epoch.

Per field: accuracy, macro-F1 (over the classes present in the targets or the valid predictions), parse-failure
rate, hallucination rate and the share of the most frequent prediction; per decoding: examples/s. The first field's
figures are also the tally's own (``accuracy``, ``f1_macro``); the failure and hallucination rates at that level
count an example once when any of its fields failed.
"""

from __future__ import annotations

from typing import Any, Optional

import torch


class FieldTally:
    """Accumulates one decoding's predictions over an epoch: ``[B, F]`` class ids (-1 = none), targets, masks."""

    def __init__(self) -> None:
        self.preds: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []
        self.failed: list[torch.Tensor] = []
        self.hallucinated: list[torch.Tensor] = []
        self.seconds = 0.0

    def add(self, preds: torch.Tensor, targets: torch.Tensor, failed: torch.Tensor, hallucinated: torch.Tensor,
            seconds: float) -> None:
        self.preds.append(preds)
        self.targets.append(targets)
        self.failed.append(failed)
        self.hallucinated.append(hallucinated)
        self.seconds += seconds

    @classmethod
    def merge(cls, parts: list[dict[str, Any]]) -> FieldTally:
        """One tally from several processes' ``{"preds", "targets", "failed", "hallucinated", "seconds"}``."""
        merged = cls()
        for part in parts:
            merged.preds.append(part["preds"].cpu())
            merged.targets.append(part["targets"].cpu())
            merged.failed.append(part["failed"].cpu())
            merged.hallucinated.append(part["hallucinated"].cpu())
            merged.seconds = max(merged.seconds, float(part["seconds"]))
        return merged

    def gathered(self) -> FieldTally:
        """The union of every process's tally of this decoding (``all_gather_object``; this one alone outside
        DDP). A collective: every process must call it, in the same order. examples/s becomes all examples over
        the slowest process's decoding time (the processes decode in parallel)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        local: Optional[dict[str, Any]] = None if not self.preds else {
            "preds": torch.cat(self.preds), "targets": torch.cat(self.targets), "failed": torch.cat(self.failed),
            "hallucinated": torch.cat(self.hallucinated), "seconds": self.seconds}
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, local)
        return FieldTally.merge([part for part in parts if part is not None])

    def compute(self, names: list[str]) -> dict[str, Any]:
        from fenlei.metrics import macro_f1, worst_class_f1
        from fenlei.predictions import top_answer_share

        preds, targets = torch.cat(self.preds), torch.cat(self.targets)
        failed, halluc = torch.cat(self.failed), torch.cat(self.hallucinated)
        n = len(preds)
        out: dict[str, Any] = {"examples_per_s": n / max(self.seconds, 1e-9), "num_examples": n, "fields": {}}
        for k, name in enumerate(names):
            p, t = preds[:, k].numpy(), targets[:, k].numpy()
            classes = sorted((set(t.tolist()) | set(p.tolist())) - {-1})
            out["fields"][name] = {
                "accuracy": float(((p == t) & (t >= 0)).mean()),  # a target unseen in train (-1) is never right
                "f1_macro": macro_f1(t, p, labels=classes) if classes else 0.0,
                "parse_failure_rate": float(failed[:, k].float().mean()),
                "hallucination_rate": float(halluc[:, k].float().mean()),
                "worst_class_f1": worst_class_f1(t, p),
                # A model that answers one value for nearly every text has learnt the prior, not the task.
                "top_prediction_share": top_answer_share(p.tolist()) or 0.0,
            }
        first = out["fields"][names[0]]
        out.update(accuracy=first["accuracy"], f1_macro=first["f1_macro"],
                   parse_failure_rate=float(failed.any(1).float().mean()),
                   hallucination_rate=float(halluc.any(1).float().mean()))
        return out
