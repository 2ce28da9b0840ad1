"""Export a trained classifier to a self-contained ONNX bundle, behind a parity gate.

    python cli.py export --ckpt_path runs/NAME/checkpoints/best-epoch03.ckpt --out bundles/NAME
    python cli.py export --ckpt_path best --run_dir runs/NAME --out bundles/NAME      (or --ckpt_path runs/NAME)
    python cli.py export --hf_model DIR --data_dir DATA --out bundles/NAME            (HF sequence classifier,
                                                                                    e.g. a merged LoRA model)

Steps: load the model and the tokenizer/max_length/data of its run (``config.yaml`` beside ``checkpoints/``);
export logits-only ONNX (legacy exporter); fuse the graph (onnxruntime transformers optimizer); quantize to INT8
(dynamic by default, or static QDQ S8S8 calibrated on training texts); compare torch fp32, ORT fp32 and ORT int8
on held-out data at the deployment batch size (argmax agreement, macro-F1 change) and fail past the limits unless
``--force``; fit a temperature per precision on the held-out logits and choose the abstention threshold; write
labels, calibration, metadata. Everything is built in a hidden temporary folder beside ``--out`` and renamed into
place at the end, so a failed export leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import random
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

from datamodules.readers import DataError, read_records
from fenlei.deploy import onnx_tools
from fenlei.errors import FenleiError
from fenlei.io import atomic_dir, atomic_write_json, file_sha256
from fenlei.metrics import macro_f1
from fenlei.serving.predictor import BUNDLE_FILES, BundlePredictor, cpu_has_vnni

NO_FFN_OUTPUTS = ("--keep_ffn_out_fp32: the graph has no FFN output projections to keep in fp32 (no MatMul named "
                  "'layer.N/output/dense'; a BERT-family encoder has one per layer)")


class ExportError(FenleiError, RuntimeError):
    """The export cannot go on (bad source, parity gate failed, unreachable threshold); the message says why."""


@dataclass
class Source:
    """What the export needs from a trained model, independent of where it came from."""

    model: Any  # torch module: forward(input_ids, attention_mask) -> logits
    tokenizer: Any  # HF fast tokenizer
    label_names: list[str]
    max_length: int
    model_type: Optional[str]
    num_heads: int
    hidden_size: int
    eval_texts: list[str]
    eval_labels: np.ndarray
    eval_source: str
    train_texts: list[str]
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    text_separator: str = " "
    description: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- sources


def resolve_checkpoint(ckpt_path: str, run_dir: Optional[str]) -> tuple[Path, Optional[Path]]:
    """``(checkpoint, run_dir)`` from a .ckpt path, a run directory, or ``best`` with ``--run_dir``."""
    from fenlei.training.cli import best_checkpoint

    if ckpt_path == "best":
        if not run_dir:
            raise ExportError("--ckpt_path best needs --run_dir (the run directory of the fit)")
        run = Path(run_dir)
        return best_checkpoint(run), run
    path = Path(ckpt_path)
    if path.is_dir():
        return best_checkpoint(path), path
    if not path.is_file():
        raise ExportError(f"--ckpt_path {ckpt_path}: no such checkpoint file or run directory")
    if run_dir:
        return path, Path(run_dir)
    guess = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return path, guess if (guess / "config.yaml").is_file() else None


def _model_class(class_path: str) -> Any:
    import importlib

    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _eval_records(args: argparse.Namespace, dm: Any, text_fields: list[str], label_field: str, sep: str) -> tuple[list[Any], str]:
    if args.eval_file:
        return read_records(Path(args.eval_file), text_fields, label_field, sep), str(args.eval_file)
    records = dm.split_records("validation")
    source = f"validation split of {dm.val_path}" if dm.val_path else f"validation split held out of {dm.train_path}"
    return records, source


def _labels_to_ids(records: Sequence[Any], label_names: list[str], where: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({r.label for r in records if r.label not in index})
    if unknown:
        raise DataError(f"{where}: labels not known to the model: {', '.join(map(repr, unknown[:5]))}")
    return np.asarray([index[r.label] for r in records], dtype=np.int64)


def _sample(texts: list[str], n: int, seed: int) -> list[str]:
    if len(texts) <= n:
        return list(texts)
    return random.Random(seed).sample(texts, n)


def _prepare_for_export(backbone: Any) -> None:
    """Eager attention: onnxruntime's fusions recognise its MatMul-Softmax-MatMul pattern, not an SDPA export."""
    setter = getattr(backbone, "set_attn_implementation", None)
    if setter is not None:
        # Architectures without eager attention (or without the switch) export as they are.
        with contextlib.suppress(ValueError, NotImplementedError, ImportError):
            setter("eager")


def load_fenlei_source(args: argparse.Namespace) -> Source:
    """Model, tokenizer and data of a fenlei run (EncoderClassifier or any module with the same forward)."""
    import yaml

    from datamodules import TextClassificationDataModule

    ckpt, run_dir = resolve_checkpoint(args.ckpt_path, args.run_dir)
    config_path = Path(args.config) if args.config else (run_dir / "config.yaml" if run_dir else None)
    if config_path is None or not config_path.is_file():
        raise ExportError(f"{ckpt}: cannot find the run's config.yaml (pass --run_dir or --config)")
    config = yaml.safe_load(config_path.read_text())
    data_args = dict(config["data"]["init_args"])
    if args.data_dir:
        data_args["data_dir"] = args.data_dir
    if args.max_length:
        data_args["max_length"] = args.max_length
    dm = TextClassificationDataModule(**data_args)
    model_cls = _model_class(config["model"]["class_path"])
    model = model_cls.load_from_checkpoint(str(ckpt), map_location="cpu")
    model.eval()
    saved_labels = model.hparams.get("label_names")
    if saved_labels is not None and list(saved_labels) != list(dm.label_names):
        raise ExportError(f"{ckpt}: the checkpoint's label_names differ from the data's labels in {config_path}")
    label_names = list(saved_labels or dm.label_names)
    text_fields, sep, label_field = list(dm.text_fields), dm.text_separator, dm.label_field
    records, source = _eval_records(args, dm, text_fields, label_field, sep)
    backbone = getattr(model, "backbone", model)
    lora_merged = False
    if hasattr(backbone, "merge_and_unload") and hasattr(backbone, "peft_config"):
        # A LoRA run (e.g. DecoderSequenceClassifier): fold the adapters into the weights, so that the ONNX graph
        # holds plain matrix products instead of base + two low-rank products per layer.
        model.backbone = backbone = backbone.merge_and_unload()
        lora_merged = True
    _prepare_for_export(backbone)
    cfg = getattr(backbone, "config", None)
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids, attention_mask).float()

    train_texts = [r.text for r in dm.split_records("train")] if args.quantization == "static" else []
    return Source(
        model=LogitsOnly(model).eval(), tokenizer=dm.tokenizer, label_names=label_names, max_length=int(dm.max_length),
        model_type=getattr(cfg, "model_type", None), num_heads=int(getattr(cfg, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(cfg, "hidden_size", 0) or 0), eval_texts=[r.text for r in records],
        eval_labels=_labels_to_ids(records, label_names, source), eval_source=source, train_texts=train_texts,
        text_fields=text_fields, text_separator=sep,
        description={"kind": "fenlei_checkpoint", "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": file_sha256(ckpt),
                     "run_dir": str(run_dir.resolve()) if run_dir else None, "config_file": str(config_path.resolve()),
                     "config": config, "model_class": config["model"]["class_path"], "lora_merged": lora_merged},
    )


def load_hf_source(args: argparse.Namespace) -> Source:
    """An HF ``AutoModelForSequenceClassification`` folder (encoder or decoder; merge LoRA adapters first)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from datamodules.readers import resolve_data_file

    folder = Path(args.hf_model)
    if not (folder / "config.json").is_file():
        raise ExportError(f"--hf_model {folder}: no config.json (an HF model folder is expected)")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:  # decoders: padding is masked anyway; the classifier reads the last real token
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    id2label = model.config.id2label
    label_names = [str(id2label[i]) for i in range(len(id2label))]
    max_length = args.max_length or min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    eval_path = Path(args.eval_file) if args.eval_file else resolve_data_file("validation", args.data_dir)
    if eval_path is None:
        raise ExportError("--hf_model needs held-out data: --eval_file FILE or --data_dir with validation.jsonl")
    fields = args.text_fields or ["text"]
    records = read_records(eval_path, fields, args.label_field)
    train_path = resolve_data_file("train", args.data_dir) if args.data_dir else None
    if args.quantization == "static" and train_path is None:
        raise ExportError("--quantization static needs training texts: --data_dir with train.jsonl")
    train_texts = [r.text for r in read_records(train_path, fields, None)] if args.quantization == "static" else []
    _prepare_for_export(getattr(model, "base_model", model))

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.float()

    cfg = model.config
    return Source(
        model=LogitsOnly(model).eval(), tokenizer=tokenizer, label_names=label_names, max_length=max_length,
        model_type=getattr(cfg, "model_type", None), num_heads=int(getattr(cfg, "num_attention_heads", 0) or 0),
        hidden_size=int(getattr(cfg, "hidden_size", 0) or 0), eval_texts=[r.text for r in records],
        eval_labels=_labels_to_ids(records, label_names, str(eval_path)), eval_source=str(eval_path),
        train_texts=train_texts, text_fields=fields,
        description={"kind": "hf_sequence_classification", "hf_model": str(folder.resolve()),
                     "architectures": getattr(cfg, "architectures", None)},
    )


# ----------------------------------------------------------------------------------------------- evaluation


def torch_logits(source: Source, texts: Sequence[str], batch_size: int) -> tuple[np.ndarray, list[list[int]]]:
    """Logits of the torch model tokenized with the HF tokenizer as in training (the reference for parity)."""
    import torch

    enc = source.tokenizer(list(texts), truncation=True, max_length=source.max_length)["input_ids"]
    pad = source.tokenizer.pad_token_id or 0
    out = np.zeros((len(texts), len(source.label_names)), dtype=np.float32)
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
            out[idx] = source.model(ids, mask).numpy()
    return out, enc


@dataclass
class GateLimits:
    min_agreement: float = 0.99
    max_f1_change_pt: float = 0.5


def parity_report(labels: np.ndarray, reference: np.ndarray, candidates: dict[str, np.ndarray], num_classes: int,
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


# ----------------------------------------------------------------------------------------------- calibration


def calibration_entry(logits: np.ndarray, labels: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    """Temperature (NLL on held-out logits), ECE before/after, and the abstention threshold for one precision."""
    from fenlei.calibration import calibrate, select_per_class_thresholds, select_threshold, softmax

    report = calibrate(logits, labels) if not args.no_temperature else None
    temperature = report.temperature if report else 1.0
    probs = softmax(logits, temperature)
    pred = probs.argmax(1)
    conf = probs.max(1)
    correct = pred == labels
    entry: dict[str, Any] = {"temperature": temperature, "report": report.to_dict() if report else None}
    mode = args.threshold
    if mode == "none":
        entry["threshold"] = {"mode": "none"}
    elif args.threshold_value is not None:
        entry["threshold"] = {"mode": "global", "value": float(args.threshold_value), "chosen_by": "--threshold_value"}
    elif mode == "global":
        target = {"target_precision": args.target_precision} if args.target_precision else {"target_coverage": args.target_coverage}
        result = select_threshold(conf, correct, **target)
        if not result.reachable:
            raise ExportError(f"threshold: target precision {args.target_precision} is not reachable on the held-out data "
                              f"(accuracy {correct.mean():.4f}); lower --target_precision or use --target_coverage")
        entry["threshold"] = {"mode": "global", "value": result.threshold, "chosen_by": target,
                              "validation": {"precision": result.precision, "coverage": result.coverage, "n": result.n}}
    else:  # per_class: only a precision target makes sense per predicted class
        target_precision = args.target_precision or 0.9
        res = select_per_class_thresholds(conf, pred, correct, len(probs[0]), target_precision, args.min_class_support)
        accepted = conf >= res.thresholds[pred]
        entry["threshold"] = {"mode": "per_class", "values": [float(v) for v in res.thresholds],
                              "chosen_by": {"target_precision": target_precision, "min_support": args.min_class_support},
                              "fallback_to_global": [bool(v) for v in res.fallback],
                              "validation": {"coverage": float(accepted.mean()),
                                             "precision": float(correct[accepted].mean()) if accepted.any() else None}}
    return entry


# ----------------------------------------------------------------------------------------------- bundle


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy", "lightning", "fenlei"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return versions


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise ExportError(f"--out {out}: already exists (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a folder")


class _DynamicSource(NamedTuple):
    graph: Path  # what dynamic INT8 quantizes: the fused graph, or a copy with tanh GELU
    excluded: list[str]  # nodes every attempt leaves in fp32 (the head, with keep_head_fp32)
    ffn_out: list[str]  # the FFN output projections, left in fp32 by the keep_ffn_out_fp32 attempts
    changes: dict[str, Any]  # what the copy changed, for metadata.quantization


def _dynamic_source(fp32: Path, tmp: Path, args: argparse.Namespace) -> _DynamicSource:
    """Prepared once (one read of the fused graph): every attempt quantizes the same graph. The GELU copy keeps
    every node name, so the names found in ``fp32`` hold for it."""
    nodes = onnx_tools.graph_nodes(fp32)
    excluded = onnx_tools.head_nodes(nodes) if args.keep_head_fp32 else []
    ffn_out = onnx_tools.ffn_output_nodes(nodes)
    if not args.gelu_approximation:
        return _DynamicSource(fp32, excluded, ffn_out, {})
    copy = tmp / ".model_for_int8.onnx"
    return _DynamicSource(copy, excluded, ffn_out, {"gelu_approximated": onnx_tools.approximate_gelu_copy(fp32, copy)})


def quantization_attempts(args: argparse.Namespace) -> list[tuple[bool, bool]]:
    """The (reduce_range, keep_ffn_out_fp32) settings to try in order until one passes the parity gate.

    Given flags make one attempt (``--reduce_range``/``--no-reduce_range``, with ``--keep_ffn_out_fp32`` or not).
    Dynamic INT8 by default: 8-bit weights; then 7-bit (the remedy for u8s8 saturation on CPUs without VNNI); then
    7-bit with the FFN output projections in fp32 (a larger bundle, so only when the all-INT8 model is not accurate
    enough: Banking77 MPNet on an AVX2 CPU, docs/deployment.md). Static: the full range, one attempt.
    """
    keep_ffn = args.keep_ffn_out_fp32
    if args.reduce_range is not None:
        return [(args.reduce_range, bool(keep_ffn))]
    if args.quantization == "static":
        return [(False, bool(keep_ffn))]
    if keep_ffn is None:
        return [(False, False), (True, False), (True, True)]
    return [(False, keep_ffn), (True, keep_ffn)]


def _quantize(source: Source, tmp: Path, raw: Path, int8: Path, args: argparse.Namespace, reduce_range: bool,
              keep_ffn_out: bool, dynamic: _DynamicSource | None, log: Any) -> dict[str, Any]:
    """Write ``int8`` (dynamic from ``dynamic``'s graph, or static QDQ from the raw one); return its description."""
    quant: dict[str, Any] = {"mode": args.quantization, "per_channel": args.per_channel, "reduce_range": reduce_range,
                             "weight_type": "QInt8", "keep_head_fp32": args.keep_head_fp32,
                             "keep_ffn_out_fp32": keep_ffn_out}
    if dynamic is not None:
        # Dynamic INT8 from the fused graph: QAttention and fewer, larger quantized MatMuls.
        graph = dynamic.graph
        excluded = dynamic.excluded + (dynamic.ffn_out if keep_ffn_out else [])
        quant.update(dynamic.changes)
        log(f"quantizing: dynamic INT8 (per_channel={args.per_channel}, reduce_range={reduce_range}, "
            f"head fp32={args.keep_head_fp32}, FFN outputs fp32={keep_ffn_out}, tanh GELU={args.gelu_approximation})")
        onnx_tools.quantize_dynamic_int8(graph, int8, args.per_channel, reduce_range, excluded)
    else:
        pre = tmp / ".model_pre.onnx"
        onnx_tools.preprocess_for_static(raw, pre)
        nodes = onnx_tools.graph_nodes(pre)
        excluded = onnx_tools.head_nodes(nodes) if args.keep_head_fp32 else []
        if keep_ffn_out:
            ffn_out = onnx_tools.ffn_output_nodes(nodes)
            if not ffn_out:
                raise ExportError(NO_FFN_OUTPUTS)
            excluded += ffn_out
        encoder = BundlePredictor(tmp, "fp32", args.threads)
        texts = _sample(source.train_texts, args.calibration_size, args.seed)
        log(f"quantizing: static QDQ S8S8 ({args.calibration_method}) calibrated on {len(texts)} training texts")
        feeds = onnx_tools.batched_feeds(encoder.encode, texts, 16)
        del encoder
        onnx_tools.quantize_static_int8(pre, int8, feeds, args.per_channel, reduce_range, excluded,
                                        args.calibration_method)
        pre.unlink()
        quant.update({"format": "QDQ", "activation_type": "QInt8", "calibration_texts": len(texts),
                      "calibration_method": args.calibration_method, "from": "unfused graph (quant_pre_process)"})
    quant["nodes_excluded"] = excluded
    return quant


def build_bundle(source: Source, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write every bundle file into ``tmp``; return the metadata (also written). Raises ExportError on a failed gate."""
    import torch

    log = (lambda msg: print(f"export: {msg}", file=sys.stderr)) if not args.quiet else (lambda msg: None)
    torch.set_num_threads(max(1, args.threads or torch.get_num_threads()))
    num_classes = len(source.label_names)
    if "uncertain" in source.label_names:
        raise ExportError("a class is named 'uncertain', which is the abstention label")

    # Tokenizer files first: the predictor (and hence the parity gate) tokenizes with the bundle's tokenizer.json.
    if not getattr(source.tokenizer, "is_fast", False):
        raise ExportError("the tokenizer has no fast (tokenizers) version; the bundle needs tokenizer.json")
    source.tokenizer.save_pretrained(str(tmp))
    atomic_write_json(tmp / "labels.json", source.label_names)

    # 1. Export (raw), 2. fuse (fp32 bundle model), 3. quantize.
    raw = tmp / ".model_raw.onnx"
    example_texts = sorted(source.eval_texts[:64], key=len)[-2:] or ["a b c", "d e f"]
    enc = source.tokenizer(example_texts, truncation=True, max_length=source.max_length, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if ids.shape[1] < 2:
        raise ExportError("export example texts tokenized to a single token")
    log(f"exporting ONNX (legacy exporter, opset {onnx_tools.OPSET})")
    onnx_tools.export_onnx(source.model, (ids, mask), raw)
    fp32 = tmp / "model_fp32.onnx"
    if args.no_optimize:
        shutil.copyfile(raw, fp32)
        optimization = {"tool": None, "fusion": "disabled (--no_optimize)"}
    else:
        log("fusing the fp32 graph (onnxruntime transformers optimizer)")
        optimization = onnx_tools.optimize_fp32(raw, fp32, source.model_type, source.num_heads, source.hidden_size,
                                                cpu_rewrites=not args.no_cpu_rewrites)
    int8 = tmp / "model_int8.onnx"
    # Stubs so that a BundlePredictor can load the temp bundle (it gives the parity gate its ORT logits and the
    # static calibration its feeds); both files are rewritten below. The stub carries the optimization entry: it
    # names the onnxruntime fusions the sessions must skip, so the parity gate runs the graph exactly as served.
    atomic_write_json(tmp / "calibration.json", {"by_precision": {p: {"temperature": 1.0} for p in ("fp32", "int8")}})
    atomic_write_json(tmp / "metadata.json", {"max_length": source.max_length, "pad_token_id": source.tokenizer.pad_token_id or 0,
                                              "optimization": optimization})
    if args.keep_head_fp32 is None:
        args.keep_head_fp32 = args.quantization == "dynamic"
    ranges = quantization_attempts(args)

    # 4. Parity gate at the deployment batch size(s): torch and ORT fp32 logits once, INT8 per attempt.
    texts, labels = source.eval_texts, source.eval_labels
    log(f"parity gate on {len(texts)} held-out texts ({source.eval_source})")
    ref, hf_ids = torch_logits(source, texts, args.batch_size)
    ort_fp32 = BundlePredictor(tmp, "fp32", args.threads)
    bundle_ids = [e.ids for e in ort_fp32.tokenizer.encode_batch(texts)]
    token_mismatch = sum(a != list(b) for a, b in zip(bundle_ids, hf_ids, strict=True))
    fp32_logits = ort_fp32.predict_logits(texts, args.batch_size)
    limits = GateLimits(args.min_agreement, args.max_f1_change)
    attempts: list[dict[str, Any]] = []
    dynamic = _dynamic_source(fp32, tmp, args) if args.quantization == "dynamic" else None
    if dynamic is not None and not dynamic.ffn_out:
        # Graphs without BERT-style FFN names (decoders: mlp/down_proj): an explicit request is an error, and the
        # automatic last attempt would only repeat the one before it under a false label.
        if args.keep_ffn_out_fp32:
            raise ExportError(NO_FFN_OUTPUTS)
        ranges = [r for r in ranges if not r[1]]
    for attempt, (reduce_range, keep_ffn_out) in enumerate(ranges):
        quant = _quantize(source, tmp, raw, int8, args, reduce_range, keep_ffn_out, dynamic, log)
        ort_int8 = BundlePredictor(tmp, "int8", args.threads)
        logits = {"ort_fp32": fp32_logits}
        for bs in sorted(set(args.parity_batch_sizes) | {args.batch_size}):
            logits["ort_int8" if bs == args.batch_size else f"ort_int8_batch{bs}"] = ort_int8.predict_logits(texts, bs)
        del ort_int8
        parity = parity_report(labels, ref, logits, num_classes, limits)
        if token_mismatch:
            parity["failures"].append(f"tokenizer.json disagrees with the training tokenizer on {token_mismatch} texts")
            parity["passed"] = False
        attempts.append({"reduce_range": reduce_range, "keep_ffn_out_fp32": keep_ffn_out, "passed": parity["passed"],
                         "failures": parity["failures"], "size_mb": round(int8.stat().st_size / 1e6, 2)})
        for name, eng in parity["engines"].items():
            extra = f", agreement {eng['agreement_vs_torch']:.4f}, dF1 {eng['macro_f1_change_pt']:+.2f} pt" if "agreement_vs_torch" in eng else ""
            log(f"  {name}: accuracy {eng['accuracy']:.4f}, macro-F1 {eng['macro_f1']:.4f}{extra}")
        if parity["passed"] or token_mismatch:
            break
        if attempt + 1 < len(ranges):
            nxt = ranges[attempt + 1]
            log(f"gate failed with reduce_range={reduce_range}, FFN outputs fp32={keep_ffn_out} "
                f"({'; '.join(parity['failures'])}); retrying with {'7' if nxt[0] else '8'}-bit weights"
                f"{' and the FFN output projections in fp32' if nxt[1] else ''}")
    raw.unlink()
    if dynamic is not None and dynamic.graph != fp32:
        dynamic.graph.unlink()
    quant["attempts"] = attempts
    parity.update({"eval_source": source.eval_source, "n": len(texts), "batch_size": args.batch_size,
                   "tokenizer_mismatches": token_mismatch})
    parity["forced"] = bool(not parity["passed"] and args.force)
    if not parity["passed"]:
        why = "; ".join(parity["failures"])
        if not args.force:
            # --keep_head_fp32 / --per_channel / --quantization dynamic: the other knobs that can recover accuracy.
            hints = [h for h, missing in (("--per_channel", not args.per_channel),
                                          ("--keep_head_fp32", not args.keep_head_fp32 and args.quantization == "static"),
                                          ("--reduce_range", not any(a["reduce_range"] for a in attempts)),
                                          ("--keep_ffn_out_fp32", not any(a["keep_ffn_out_fp32"] for a in attempts)),
                                          ("--quantization dynamic", args.quantization == "static")) if missing]
            tried = (" (tried " + "; ".join(f"reduce_range={a['reduce_range']} keep_ffn_out_fp32={a['keep_ffn_out_fp32']}"
                                            for a in attempts) + ")") if len(attempts) > 1 else ""
            raise ExportError(f"parity gate failed on {len(texts)} held-out texts: {why}{tried} "
                              f"(try {', '.join(hints + ['--force to ship anyway'])})")
        log(f"WARNING: parity gate failed but --force given: {why}")

    # 5. Calibration per precision (the served model's own logits) and thresholds.
    calibration = {"uncertain_label": "uncertain", "fitted_on": source.eval_source, "n": len(texts),
                   "by_precision": {"fp32": calibration_entry(logits["ort_fp32"], labels, args),
                                    "int8": calibration_entry(logits["ort_int8"], labels, args)}}
    atomic_write_json(tmp / "calibration.json", calibration)
    for precision, entry in calibration["by_precision"].items():
        rep = entry["report"]
        if rep:
            log(f"  {precision}: temperature {rep['temperature']:.3f}, ECE {rep['ece_before']:.4f} -> {rep['ece_after']:.4f}")

    sizes = {name: (tmp / name).stat().st_size for name in sorted(os.listdir(tmp))
             if (tmp / name).is_file() and name != "metadata.json"}
    metadata = {
        "format": "fenlei-bundle", "format_version": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source.description,
        "labels": num_classes, "max_length": source.max_length, "pad_token_id": int(source.tokenizer.pad_token_id or 0),
        "text_fields": source.text_fields, "text_separator": source.text_separator,
        "inputs": onnx_tools.INPUT_NAMES, "output": "logits",
        "export": {"exporter": "torch.onnx.export(dynamo=False)", "opset": onnx_tools.OPSET,
                   "dynamic_axes": {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}},
        "optimization": optimization, "quantization": quant, "parity": parity,
        "calibration": {p: e["report"] for p, e in calibration["by_precision"].items()},
        "sizes_bytes": sizes,
        "size_ratio_fp32_over_int8": sizes["model_fp32.onnx"] / sizes["model_int8.onnx"],
        "versions": library_versions(),
        # The INT8 kernels differ by CPU (u8s8 saturation without VNNI): the gate's verdict holds for this kind.
        "export_cpu": {"vnni": cpu_has_vnni()},
        "command": " ".join(["python", "cli.py", "export", *getattr(args, "argv", [])]),
    }
    atomic_write_json(tmp / "metadata.json", metadata)
    missing = [f for f in BUNDLE_FILES if not (tmp / f).is_file()]
    if missing:
        raise ExportError(f"bundle incomplete, missing {', '.join(missing)}")
    return metadata


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Build the bundle in a temporary folder beside ``--out`` and rename it into place only if all went well."""
    out = Path(args.out)
    _check_out(out, args.overwrite)
    source = load_hf_source(args) if args.hf_model else load_fenlei_source(args)
    return atomic_dir(out, lambda tmp: build_bundle(source, tmp, args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cli.py export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("source")
    src.add_argument("--ckpt_path", help="a .ckpt file, a run directory (its best checkpoint), or 'best' with --run_dir")
    src.add_argument("--run_dir", help="run directory holding config.yaml (default: the checkpoint's run directory)")
    src.add_argument("--config", help="config.yaml to use instead of the run directory's")
    src.add_argument("--hf_model", help="HF AutoModelForSequenceClassification folder (instead of --ckpt_path)")
    src.add_argument("--data_dir", help="override the data directory of the run's config (or data for --hf_model)")
    src.add_argument("--eval_file", help="held-out file for the parity gate and calibration (default: the validation split)")
    src.add_argument("--text_fields", nargs="+", help="text fields (--hf_model only; default: text)")
    src.add_argument("--label_field", default="label", help="label field (--hf_model only)")
    src.add_argument("--max_length", type=int, help="token limit (default: the run's data.max_length)")
    p.add_argument("--out", required=True, help="bundle folder to write (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out (atomically)")
    q = p.add_argument_group("quantization")
    q.add_argument("--quantization", choices=["dynamic", "static"], default="dynamic", help="INT8 scheme (default dynamic)")
    q.add_argument("--per_channel", action=argparse.BooleanOptionalAction, default=True,
                   help="per-channel weight scales (default; --no-per_channel: per-tensor)")
    q.add_argument("--reduce_range", action=argparse.BooleanOptionalAction, default=None,
                   help="7-bit weights: avoids u8s8 saturation on CPUs without VNNI (AVX2 only). Default: static off; "
                        "dynamic tries 8-bit weights and, only if the parity gate fails, 7-bit (both attempts are in "
                        "metadata.json); give --reduce_range or --no-reduce_range for a single attempt")
    q.add_argument("--keep_ffn_out_fp32", action=argparse.BooleanOptionalAction, default=None,
                   help="leave the FFN output projections unquantized (more accurate, about 1/3 of the encoder weights "
                        "stay fp32). Default: dynamic tries it last, only if the all-INT8 attempts fail the parity gate")
    q.add_argument("--keep_head_fp32", action=argparse.BooleanOptionalAction, default=None,
                   help="leave the classification head unquantized (default on for dynamic: it runs once per text, "
                        "where INT8 only adds quantize/dequantize work; off for static)")
    q.add_argument("--gelu_approximation", action=argparse.BooleanOptionalAction, default=True,
                   help="dynamic INT8 graph only: tanh GELU (FastGelu) instead of erf, at most ~3e-4 apart, far under "
                        "the INT8 step, and a cheaper CPU kernel (default on; model_fp32.onnx keeps the exact GELU)")
    q.add_argument("--calibration_size", type=int, default=512, help="training texts for static calibration")
    q.add_argument("--calibration_method", choices=["minmax", "entropy", "percentile"], default="minmax")
    q.add_argument("--no_optimize", action="store_true", help="skip graph fusion (slower; for debugging)")
    q.add_argument("--no_cpu_rewrites", action="store_true",
                   help="fuse, but keep onnxruntime's fused SkipLayerNormalization/BiasGelu/token-type nodes as they are "
                        "(deploy/cpu_rewrites.py; for comparisons, or for consumers that load the ONNX with their own "
                        "session options)")
    g = p.add_argument_group("parity gate")
    g.add_argument("--batch_size", type=int, default=32, help="deployment batch size; parity is measured at it")
    g.add_argument("--parity_batch_sizes", type=int, nargs="*", default=[1],
                   help="further INT8 batch sizes gated too (default 1: single requests to the service)")
    g.add_argument("--min_agreement", type=float, default=0.99, help="minimum argmax agreement with torch fp32")
    g.add_argument("--max_f1_change", type=float, default=0.5, help="maximum |macro-F1 change| in points")
    g.add_argument("--force", action="store_true", help="write the bundle even if the parity gate fails (recorded)")
    c = p.add_argument_group("calibration and abstention")
    c.add_argument("--no_temperature", action="store_true", help="do not fit a temperature (T = 1)")
    c.add_argument("--threshold", choices=["none", "global", "per_class"], default="global",
                   help="abstention threshold on calibrated confidence (default global)")
    c.add_argument("--target_precision", type=float, help="choose the threshold for this precision on held-out data")
    c.add_argument("--target_coverage", type=float, default=0.95,
                   help="choose the threshold for this coverage (default 0.95; ignored with --target_precision)")
    c.add_argument("--threshold_value", type=float, help="use this global threshold as is")
    c.add_argument("--min_class_support", type=int, default=30, help="per_class: fewer predictions -> global threshold")
    p.add_argument("--threads", type=int, help="torch and onnxruntime threads during export")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv)
    if bool(args.ckpt_path) == bool(args.hf_model):
        print("export: give exactly one of --ckpt_path and --hf_model", file=sys.stderr)
        return 2
    try:
        metadata = export(args)
    except (ExportError, DataError, FileNotFoundError) as err:
        print(f"export: error: {err}", file=sys.stderr)
        return 2
    sizes = metadata["sizes_bytes"]
    print(f"export: wrote {args.out} (fp32 {sizes['model_fp32.onnx'] / 1e6:.1f} MB, int8 {sizes['model_int8.onnx'] / 1e6:.1f} MB; "
          f"parity {'passed' if metadata['parity']['passed'] else 'FAILED (forced)'})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
