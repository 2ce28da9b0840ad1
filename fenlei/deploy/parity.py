"""The parity gate: the exported models must predict what the torch model predicts on held-out data.

Judged on argmax agreement with torch fp32 and the change in macro-F1 (not ``allclose`` on logits), at the
deployment batch size, for every INT8 attempt in turn until one passes (:func:`gate_attempts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from fenlei.metrics import macro_f1


class Attempt(NamedTuple):
    """One INT8 model to build and gate."""

    reduce_range: bool  # 7-bit weights
    keep_ffn_out_fp32: bool
    # The MatMuls as 8-bit weight-only MatMulNBits (int8 compute with an activation scale per block of 32 values,
    # instead of one per tensor); the fused Attention stays QAttention unless fp32_attention.
    weight_only: bool = False
    # With weight_only: Attention split into its packed Q/K/V projection (a MatMulNBits too) and an fp32
    # MultiHeadAttention core (fenlei.deploy.unfused_attention), instead of QAttention.
    fp32_attention: bool = False


def describe(attempt: Attempt) -> str:
    """The attempt in words, for progress lines and failure messages."""
    if attempt.weight_only:
        what = "8-bit weight-only MatMulNBits" + (" with the attention core fp32" if attempt.fp32_attention else "")
    else:
        what = f"{'7' if attempt.reduce_range else '8'}-bit weights"
    return what + (" and the FFN output projections in fp32" if attempt.keep_ffn_out_fp32 else "")


Log = Callable[[str], None]


@dataclass(frozen=True)
class GateLimits:
    min_agreement: float = 0.99
    max_f1_change_pt: float = 0.5


def torch_logits(model: Any, tokenizer: Any, max_length: int, num_classes: int, texts: Sequence[str],
                 batch_size: int) -> tuple[np.ndarray, list[list[int]]]:
    """Logits of the torch model tokenized with the HF tokenizer as in training (the reference for parity), and
    the token ids (to compare with the bundle's tokenizer)."""
    import torch

    enc = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id or 0
    out = np.zeros((len(texts), num_classes), dtype=np.float32)
    order = np.argsort([len(t) for t in texts], kind="stable")  # same batching as BundlePredictor
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                ids[row, : len(enc[i])] = torch.tensor(enc[i])
                mask[row, : len(enc[i])] = 1
            out[idx] = model(ids, mask).numpy()
    return out, enc


def token_mismatches(bundle_ids: Sequence[Sequence[int]], reference_ids: Sequence[Sequence[int]]) -> int:
    """Texts that the bundle's tokenizer.json encodes differently from the training tokenizer."""
    return sum(list(a) != list(b) for a, b in zip(bundle_ids, reference_ids, strict=True))


def parity_report(labels: np.ndarray, reference: np.ndarray, candidates: dict[str, np.ndarray],
                  limits: GateLimits) -> dict[str, Any]:
    """Accuracy/macro-F1 of each engine, and argmax agreement + macro-F1 change (points) against ``reference``."""
    ref_pred = reference.argmax(1)
    ref_f1 = macro_f1(labels, ref_pred)
    engines: dict[str, Any] = {"torch_fp32": {"accuracy": float(np.mean(ref_pred == labels)), "macro_f1": ref_f1}}
    failures = []
    for name, logits in candidates.items():
        pred = logits.argmax(1)
        f1 = macro_f1(labels, pred)
        agreement = float(np.mean(pred == ref_pred))
        change = 100.0 * (f1 - ref_f1)
        engines[name] = {"accuracy": float(np.mean(pred == labels)), "macro_f1": f1, "agreement_vs_torch": agreement,
                         "macro_f1_change_pt": change, "max_abs_logit_diff": float(np.max(np.abs(logits - reference)))}
        if agreement < limits.min_agreement:
            failures.append(f"{name}: argmax agreement with torch fp32 {agreement:.4f} < {limits.min_agreement}")
        if abs(change) > limits.max_f1_change_pt:
            failures.append(f"{name}: macro-F1 change {change:+.2f} pt exceeds +-{limits.max_f1_change_pt} pt")
    return {"engines": engines, "failures": failures, "passed": not failures,
            "limits": {"min_agreement": limits.min_agreement, "max_f1_change_pt": limits.max_f1_change_pt}}


@dataclass
class GateOutcome:
    parity: dict[str, Any]  # the report of the chosen attempt (the one shipped)
    quantization: dict[str, Any]  # that attempt's INT8 description, with ``attempts``: every attempt's verdict
    logits: dict[str, np.ndarray]  # that attempt's ORT logits by engine name
    chosen: int = 0  # its index in the attempts made: the one that passed, else the closest to passing


def closeness(parity: dict[str, Any]) -> tuple[float, float]:
    """How near a failed attempt came to the gate: its lowest INT8 agreement with torch first, then the smaller
    of its largest macro-F1 changes (the order in which a forced export picks the attempt to ship)."""
    int8 = [e for name, e in parity["engines"].items() if name.startswith("ort_int8")]
    if not int8:
        return (0.0, 0.0)
    return (min(e["agreement_vs_torch"] for e in int8), -max(abs(e["macro_f1_change_pt"]) for e in int8))


def gate_attempts(attempts: Sequence[Attempt],
                  try_attempt: Callable[[Attempt], tuple[dict[str, Any], dict[str, np.ndarray], float]],
                  labels: np.ndarray, reference: np.ndarray, limits: GateLimits, tokenizer_mismatches: int = 0,
                  log: Log = lambda message: None) -> GateOutcome:
    """Build and judge the INT8 models in ``attempts`` order until one passes the gate.

    ``try_attempt(attempt)`` writes that INT8 model and returns ``(description, logits by engine, size in MB)``.
    A tokenizer mismatch fails every attempt alike, so the first one is the last.
    """
    if not attempts:
        raise ValueError("no quantization attempt to make")
    records: list[dict[str, Any]] = []
    made: list[tuple[dict[str, Any], dict[str, Any], dict[str, np.ndarray]]] = []
    for number, attempt in enumerate(attempts):
        quantization, logits, size_mb = try_attempt(attempt)
        attempt = Attempt(*attempt)
        parity = parity_report(labels, reference, logits, limits)
        if tokenizer_mismatches:
            parity["failures"].append(f"tokenizer.json disagrees with the training tokenizer on {tokenizer_mismatches} texts")
            parity["passed"] = False
        records.append({"reduce_range": attempt.reduce_range, "keep_ffn_out_fp32": attempt.keep_ffn_out_fp32,
                        "weight_only": attempt.weight_only, "fp32_attention": attempt.fp32_attention,
                        "passed": parity["passed"],
                        "failures": parity["failures"], "size_mb": size_mb})
        for name, eng in parity["engines"].items():
            extra = (f", agreement {eng['agreement_vs_torch']:.4f}, dF1 {eng['macro_f1_change_pt']:+.2f} pt"
                     if "agreement_vs_torch" in eng else "")
            log(f"  {name}: accuracy {eng['accuracy']:.4f}, macro-F1 {eng['macro_f1']:.4f}{extra}")
        made.append((parity, quantization, logits))
        if parity["passed"] or tokenizer_mismatches:
            break
        if number + 1 < len(attempts):
            log(f"gate failed with {describe(attempt)} ({'; '.join(parity['failures'])}); retrying with "
                f"{describe(Attempt(*attempts[number + 1]))}")
    chosen = len(made) - 1
    if not made[-1][0]["passed"] and len(made) > 1:
        chosen = max(range(len(made)), key=lambda i: closeness(made[i][0]))
        log(f"no attempt passed the gate; the closest was attempt {chosen + 1} "
            f"({describe(Attempt(*attempts[chosen]))})")
    parity, quantization, logits = made[chosen]
    quantization["attempts"] = records
    quantization["shipped_attempt"] = chosen + 1  # 1-based, as the progress lines count
    return GateOutcome(parity, quantization, logits, chosen)


def failure_message(n_texts: int, parity: dict[str, Any], attempts: Sequence[dict[str, Any]],
                    untried: Sequence[str]) -> str:
    """Why the gate failed, what was tried, and the options that can recover accuracy (``untried``)."""
    why = "; ".join(parity["failures"])
    tried = (" (tried " + "; ".join(f"reduce_range={a['reduce_range']} keep_ffn_out_fp32={a['keep_ffn_out_fp32']}"
                                    + (" weight_only" if a.get("weight_only") else "")
                                    + (" fp32_attention" if a.get("fp32_attention") else "")
                                    for a in attempts) + ")") if len(attempts) > 1 else ""
    return f"parity gate failed on {n_texts} held-out texts: {why}{tried} (try {', '.join([*untried, '--force to ship anyway'])})"
