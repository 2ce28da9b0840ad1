"""The probe-first cascade (issue 15, item 3): a calibrated probe answers what it is sure of, a generative classifier
reviews the rest, and what the reviewer is unsure of comes back ``uncertain``.

Per text, for the probe's field (the reviewer's FIRST field; a probe is one head over one label field):

1. the saved probe's calibrated top probability (``softmax(logits / T)``, :mod:`fenlei.probe.predictor`) is
   ``>= probe_threshold``: the probe's label answers (route ``probe``);
2. otherwise the text is routed to the reviewer, a LoRA generative classifier run, decoded by label scoring
   (:meth:`~lightning_modules.answer_decoding.AnswerDecoding.decode_score`): its label answers (route
   ``reviewer``) when its score, the softmax over that field's labels of the label-scoring log-probabilities (what
   ``fenlei predict`` writes as the confidence of a generative run), is ``>= reviewer_threshold``, and
   ``uncertain`` otherwise.

The reviewer's OTHER fields (Endava's urgency and impact, online_shopping's sentiment) have no probe: they always
come from the reviewer, ``uncertain`` under ``reviewer_threshold``, route ``reviewer``. So with ``fields="all"``
(the default) a reviewer of several fields runs on EVERY text, and the probe saves no LM time, only replaces the
first field's answer where it is sure. Label scoring decodes the fields in order, each conditioned on the values it
chose itself, so the later fields are exactly the reviewer's own answers whatever the probe said. ``fields="first"``
answers the probe's field only: then only the routed texts reach the LM, which is where the cascade saves time. A
single-field reviewer is the same under both.

Thresholds: both comparisons are ``>=``, as fenlei's ``uncertain`` is ``confidence < threshold``: a probe threshold
of 0 answers every text with the probe, 1 routes every text whose probe confidence is below 1; a reviewer threshold
of 0 never abstains, 1 abstains unless the reviewer is certain.

The frozen LM is shared when it can be exactly (:func:`shared_backbone`): the probe was fitted on the reviewer's
base model (same files, sha256), the adapter is LoRA (switched off while the probe's features are extracted, so the
features are the base model's) and the weights are float32 (the probe's extraction dtype). Otherwise both are
loaded.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from fenlei.errors import FenleiError
from fenlei.predictions import COLLAPSED_SHARE, UNCERTAIN_LABEL, top_answer_share

Fields = Literal["all", "first"]
ROUTES = ("probe", "reviewer")


class CascadeError(FenleiError, ValueError):
    """A probe and a reviewer that cannot be cascaded (other labels), or options out of range."""


def check_threshold(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise CascadeError(f"--{name} must be a number in [0, 1], got {value!r}")
    return float(value)


class Reviewer:
    """A generative classifier run (``config.yaml`` + checkpoint, :func:`fenlei.training.run_dir.load_run`) that
    scores labels for plain texts, batched, prompts built by the run's own DataModule.

    ``field_labels`` come from the checkpoint's ``answer_spec`` (the labels it was trained on), so the prompt lists
    exactly the values the scorer scores; the DataModule is still built from the run's config (its instruction,
    chat template, ``max_length``), which needs the run's train file where the config names it.
    ``texts_scored`` counts the texts that went through the LM (the cascade's figure of work done).
    """

    def __init__(self, module: Any, datamodule: Any, device: str = "cpu") -> None:
        self.module, self.datamodule = module.eval().to(device), datamodule
        spec = module.spec
        # The checkpoint's label sets, not the train file's (one source of truth for prompt and scorer).
        datamodule.__dict__["field_labels"] = [list(v) for v in spec.labels]
        self.field_names: list[str] = list(spec.names)
        self.field_labels: list[list[str]] = [list(v) for v in spec.labels]
        self.label_fields: list[str] = list(datamodule.label_fields)
        self.text_fields: list[str] = list(datamodule.text_fields)
        self.text_separator: str = datamodule.text_separator
        self.texts_scored = 0

    @classmethod
    def from_run(cls, reviewer: str, device: str = "cpu") -> Reviewer:
        from fenlei.training.run_dir import load_run

        run = load_run(reviewer)
        if not hasattr(run.model, "decode_score"):
            raise CascadeError(f"--reviewer {reviewer}: {run.model_class_path} is no generative classifier (the "
                               "reviewer scores labels with decode_score)")
        return cls(run.model, run.datamodule, device)

    @property
    def pretrained(self) -> str:
        return str(self.module.hparams.pretrained)

    def label_maps(self) -> list[dict[str, str]]:
        return [dict(self.datamodule.label_maps.get(f, {})) for f in self.label_fields]

    def prompts(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.datamodule.encode_prompt(t) for t in texts]

    def score(self, texts: Sequence[str], batch_size: int = 8) -> tuple[np.ndarray, list[np.ndarray]]:
        """``([N, F] class ids, per field [N, C_k] probabilities)`` of label scoring, in input order. Texts are
        batched longest-first by prompt length (less padding), as the DataModule batches evaluation."""
        import torch

        from datamodules.prompt_classification import PromptCollator, PromptDataset

        num_fields = len(self.field_names)
        choice = np.zeros((len(texts), num_fields), dtype=np.int64)
        probs = [np.zeros((len(texts), len(v)), dtype=np.float64) for v in self.field_labels]
        if not texts:
            return choice, probs
        dataset = PromptDataset(self.prompts(texts), None, self.module.spec)
        order = sorted(range(len(dataset)), key=lambda i: -len(dataset.prompts[i]))
        tokenizer = self.datamodule.tokenizer
        collate = PromptCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        device = next(self.module.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = collate([dataset[i] for i in rows])
                batch = {k: v.to(device) for k, v in batch.items()}
                picked, scores = self.module.decode_score(batch)
                choice[rows] = picked.cpu().numpy()
                for k, s in enumerate(scores):
                    probs[k][rows] = torch.softmax(s.float(), dim=-1).cpu().numpy()
        self.texts_scored += len(texts)
        return choice, probs


def shared_backbone(probe: Any, reviewer: Reviewer) -> Optional[tuple[Any, Any, Any]]:
    """``(decoder, tokenizer, adapter-off context)`` for :class:`~fenlei.probe.predictor.ProbePredictor` when the
    reviewer's frozen base model is exactly the probe's model, else None (see the module docstring)."""
    import torch

    from fenlei.probe.features import load_feature_tokenizer
    from fenlei.probe.identity import identity_problem, model_identity

    module = reviewer.module
    if module.hparams.get("peft_method") != "lora":
        return None
    if identity_problem(probe.model, model_identity(reviewer.pretrained)) is not None:
        return None
    if probe.model.get("sha256") is None:  # no file digest on either side: a name alone is no proof
        return None
    decoder = module.model.get_base_model().get_decoder()
    if any(p.dtype != torch.float32 for p in decoder.parameters()):
        return None
    return decoder, load_feature_tokenizer(reviewer.pretrained), module.model.disable_adapter


@dataclass
class CascadeRecord:
    """One text's answer: per field ``{label, predicted_label, score, route, uncertain}``, and the route of the
    probe's field (``route``)."""

    route: str
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)


class Cascade:
    """The probe (a :class:`~fenlei.probe.predictor.ProbePredictor`) in front of a :class:`Reviewer`.

    Args:
        predictor: the saved probe, loaded.
        reviewer: the generative classifier.
        probe_threshold: the probe answers when its calibrated top probability is at least this (default: the
            threshold saved with the probe, ``calibration.json``).
        reviewer_threshold: a reviewer's field under this score is ``uncertain``.
        fields: ``all`` (every field of the reviewer) or ``first`` (the probe's field only).
        reviewer_batch_size: texts per label-scoring batch.
    """

    def __init__(self, predictor: Any, reviewer: Reviewer, probe_threshold: Optional[float] = None,
                 reviewer_threshold: float = 0.5, fields: Fields = "all", reviewer_batch_size: int = 8) -> None:
        if fields not in ("all", "first"):
            raise CascadeError(f"--fields must be all or first, got {fields!r}")
        if reviewer_batch_size < 1:
            raise CascadeError("--reviewer_batch_size must be >= 1")
        self.predictor, self.reviewer = predictor, reviewer
        saved = predictor.probe.threshold
        self.probe_threshold = check_threshold("probe_threshold", saved if probe_threshold is None else probe_threshold)
        self.reviewer_threshold = check_threshold("reviewer_threshold", reviewer_threshold)
        self.fields, self.reviewer_batch_size = fields, reviewer_batch_size
        self.uncertain_label = predictor.probe.uncertain_label or UNCERTAIN_LABEL
        probe_labels, first = list(predictor.label_names), reviewer.field_labels[0]
        if set(probe_labels) != set(first):
            only_probe, only_reviewer = sorted(set(probe_labels) - set(first)), sorted(set(first) - set(probe_labels))
            raise CascadeError(f"the probe's labels and the reviewer's first field {reviewer.field_names[0]!r} differ "
                               f"(probe only: {only_probe}; reviewer only: {only_reviewer}): a cascade needs one label set")
        if self.uncertain_label in {v for values in reviewer.field_labels for v in values}:
            raise CascadeError(f"the uncertain label {self.uncertain_label!r} is a label of the reviewer")

    @property
    def field_names(self) -> list[str]:
        names = self.reviewer.field_names
        return names if self.fields == "all" else names[:1]

    def _field(self, label: str, score: float, route: str, threshold: float) -> dict[str, Any]:
        uncertain = bool(score < threshold)
        return {"label": self.uncertain_label if uncertain else label, "predicted_label": label,
                "score": float(score), "route": route, "uncertain": uncertain}

    def answer(self, probe_texts: Sequence[str], reviewer_texts: Sequence[str],
               probe_batch_size: Optional[int] = None) -> list[CascadeRecord]:
        """One record per text, in input order. ``probe_texts`` and ``reviewer_texts`` are the same rows joined
        from each model's own text fields. Only the texts that need the LM go through it, in one batched pass."""
        if len(probe_texts) != len(reviewer_texts):
            raise ValueError("probe_texts and reviewer_texts must hold the same rows")
        probs = self.predictor.predict_proba(list(probe_texts), probe_batch_size)
        top = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=np.int64)
        confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
        routed = [i for i in range(len(probe_texts)) if confidence[i] < self.probe_threshold]
        needs_lm = list(range(len(probe_texts))) if len(self.field_names) > 1 else routed
        choice, field_probs = self.reviewer.score([reviewer_texts[i] for i in needs_lm], self.reviewer_batch_size)
        at = {i: j for j, i in enumerate(needs_lm)}
        routed_set = set(routed)
        labels = self.reviewer.field_labels
        out = []
        for i in range(len(probe_texts)):
            record = CascadeRecord(route="reviewer" if i in routed_set else "probe")
            for k, name in enumerate(self.field_names):
                if k == 0 and i not in routed_set:
                    record.fields[name] = self._field(self.predictor.label_names[int(top[i])], confidence[i], "probe",
                                                      self.probe_threshold)
                else:
                    j = at[i]
                    c = int(choice[j, k])
                    record.fields[name] = self._field(labels[k][c], field_probs[k][j, c], "reviewer",
                                                      self.reviewer_threshold)
            out.append(record)
        return out


# A route is judged collapsed (fenlei.predictions.COLLAPSED_SHARE) only on at least this many answers: a handful of
# routed texts may share a label by chance.
COLLAPSE_MIN_ANSWERS = 20


def collapsed_routes(report: dict[str, Any]) -> list[str]:
    """``field/route`` of every route in a :func:`summarise` report whose answers collapsed to one value: a
    reviewer that answers the majority for everything is confidently wrong, and no threshold catches it."""
    return [f"{name}/{route} ({part['top_answer_share']:.0%} of {part['answered']} answers one label)"
            for name, entry in report["fields"].items() for route, part in entry["by_route"].items()
            if part["answered"] >= COLLAPSE_MIN_ANSWERS and (part.get("top_answer_share") or 0) > COLLAPSED_SHARE]


def summarise(records: Sequence[CascadeRecord], gold: dict[str, list[str]], seconds: float,
              lm_texts: int, settings: dict[str, Any]) -> dict[str, Any]:
    """Coverage, share routed, accuracy on answered texts (fields with gold labels), end-to-end texts/s.

    Per field: ``coverage`` = answered (not ``uncertain``) / texts; ``accuracy`` = correct / answered;
    ``accuracy_all`` = correct / texts (``uncertain`` counted wrong); ``by_route``: texts, answered, accuracy and
    ``top_answer_share`` (the most frequent answer's share, for :func:`collapsed_routes`) of each route."""
    n = len(records)
    routed = sum(r.route == "reviewer" for r in records)
    fields: dict[str, Any] = {}
    names = list(records[0].fields) if records else []
    for name in names:
        values = [r.fields[name] for r in records]
        answered = [i for i, v in enumerate(values) if not v["uncertain"]]
        entry: dict[str, Any] = {"answered": len(answered), "uncertain": n - len(answered),
                                 "coverage": round(len(answered) / n, 6) if n else None}
        truth = gold.get(name)
        if truth is not None:
            correct = [i for i in answered if values[i]["label"] == truth[i]]
            entry["accuracy"] = round(len(correct) / len(answered), 6) if answered else None
            entry["accuracy_all"] = round(len(correct) / n, 6) if n else None
        by_route = {}
        for route in ROUTES:
            rows = [i for i, v in enumerate(values) if v["route"] == route]
            if not rows:
                continue
            done = [i for i in rows if not values[i]["uncertain"]]
            part: dict[str, Any] = {"texts": len(rows), "answered": len(done),
                                    "top_answer_share": top_answer_share([values[i]["label"] for i in done])}
            if truth is not None:
                part["accuracy"] = round(sum(values[i]["label"] == truth[i] for i in done) / len(done), 6) if done \
                    else None
            by_route[route] = part
        entry["by_route"] = by_route
        fields[name] = entry
    return {"texts": n, "routed": routed, "share_routed": round(routed / n, 6) if n else None,
            "lm_texts": lm_texts, "seconds": round(seconds, 4),
            "texts_per_s": round(n / seconds, 3) if seconds > 0 and n else None,
            **settings, "fields": fields}


class Timer:
    """Wall seconds of a block (``with Timer() as t: ...; t.seconds``)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def load_cascade(probe_dir: str | Path, reviewer: str, probe_threshold: Optional[float] = None,
                 reviewer_threshold: float = 0.5, fields: Fields = "all", reviewer_batch_size: int = 8,
                 device: str = "cpu", num_threads: Optional[int] = None, share_model: bool = True,
                 progress: bool = False) -> tuple[Cascade, bool]:
    """``(cascade, whether the LM is shared)``: the reviewer loaded first, then the probe on the reviewer's decoder
    when :func:`shared_backbone` allows it, on its own model otherwise."""
    from fenlei.probe.features import resolve_device
    from fenlei.probe.predictor import ProbePredictor
    from fenlei.probe.store import load_probe

    if num_threads:
        import torch

        torch.set_num_threads(num_threads)
    probe = load_probe(probe_dir)  # checked before the LM is loaded: a broken probe fails in a second
    device = resolve_device(device)
    loaded = Reviewer.from_run(reviewer, device)
    backbone = shared_backbone(probe, loaded) if share_model else None
    predictor = ProbePredictor(probe_dir, model=loaded.pretrained if backbone else None, device=device,
                               progress=progress, backbone=backbone)
    return Cascade(predictor, loaded, probe_threshold, reviewer_threshold, fields, reviewer_batch_size), \
        backbone is not None
