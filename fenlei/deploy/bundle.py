"""The bundle's files: tokenizer and labels, the ONNX graphs (exported and fused), and metadata.json.

The file set is ``fenlei.serving.bundle_check.BUNDLE_FILES``; everything is written into a temporary folder that
the export renames into place only when the whole bundle is there (fenlei.deploy.staging). The stub metadata says
the bundle is unfinished until the final one, with the parity verdict and the files' sha256, is written last.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
from pathlib import Path
from typing import Any

from fenlei.deploy import onnx_tools
from fenlei.deploy.calibration_step import UNCERTAIN_LABEL
from fenlei.deploy.errors import ExportError
from fenlei.deploy.parity import Log
from fenlei.deploy.sources import Source
from fenlei.io import atomic_write_json
from fenlei.serving.bundle_check import (
    BUNDLE_FILES,
    LABEL_CONFIG,
    PRECISIONS,
    UNFINISHED_FORMAT,
    BundleError,
    file_hashes,
    label_config,
    load_bundle,
)

RAW_GRAPH = ".model_raw.onnx"
FP32_GRAPH = "model_fp32.onnx"
INT8_GRAPH = "model_int8.onnx"


def write_tokenizer_and_labels(tmp: Path, source: Source) -> None:
    """First of all: the predictor (and hence the parity gate) tokenizes with the bundle's tokenizer.json. Beside
    labels.json, config.json gives the labels as Hugging Face tools read them (id2label, label2id, num_labels, the
    backbone's model_type)."""
    if UNCERTAIN_LABEL in source.label_names:
        raise ExportError(f"a class is named {UNCERTAIN_LABEL!r}, which is the abstention label")
    if not getattr(source.tokenizer, "is_fast", False):
        raise ExportError("the tokenizer has no fast (tokenizers) version; the bundle needs tokenizer.json")
    source.tokenizer.save_pretrained(str(tmp))
    atomic_write_json(tmp / "labels.json", source.label_names)
    atomic_write_json(tmp / LABEL_CONFIG, label_config(source.label_names, source.model_type))


def export_graphs(source: Source, tmp: Path, optimize: bool, cpu_rewrites: bool, log: Log) -> tuple[Path, Path, dict[str, Any]]:
    """Export the raw logits-only graph (legacy exporter) and fuse it into ``model_fp32.onnx``; returns the raw
    graph (static quantization starts from it), the fp32 graph and the optimization entry for metadata.json."""
    raw = tmp / RAW_GRAPH
    example_texts = sorted(source.eval_texts[:64], key=len)[-2:] or ["a b c", "d e f"]
    enc = source.tokenizer(example_texts, truncation=True, max_length=source.max_length, padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if ids.shape[1] < 2:
        raise ExportError("export example texts tokenized to a single token")
    log(f"exporting ONNX (legacy exporter, opset {onnx_tools.OPSET})")
    onnx_tools.export_onnx(source.model, (ids, mask), raw)
    fp32 = tmp / FP32_GRAPH
    if not optimize:
        shutil.copyfile(raw, fp32)
        return raw, fp32, {"tool": None, "fusion": "disabled (--no_optimize)"}
    log("fusing the fp32 graph (onnxruntime transformers optimizer)")
    optimization = onnx_tools.optimize_fp32(raw, fp32, source.model_type, source.num_heads, source.hidden_size,
                                            cpu_rewrites=cpu_rewrites)
    return raw, fp32, optimization


def trim_vocabulary(source: Source, graphs: tuple[Path, ...], scripts: tuple[str, ...], log: Log) -> dict[str, Any]:
    """Trim the word-embedding table of every graph in ``graphs`` to the pieces of ``scripts``
    (:mod:`fenlei.deploy.embeddings`); returns the metadata entry, with the kept ids under ``kept_ids`` (popped by
    the caller once it has measured the held-out effect)."""
    import onnx

    from fenlei.deploy import embeddings

    tokenizer = source.tokenizer
    served = embeddings.served_scripts(scripts, source.train_texts)
    if not served:
        raise ExportError(f"--vocab_scripts {' '.join(scripts)}: no script to keep (auto found no letters in the "
                          "training texts)")
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if tokenizer.unk_token_id is None:
        raise ExportError("--vocab_scripts: the tokenizer has no <unk> token to map the dropped pieces to")
    kept = embeddings.kept_ids(pieces, served, tokenizer.all_special_ids, tokenizer.unk_token_id)
    entry: dict[str, Any] = {"scripts": served, "asked": list(scripts), "pieces": len(pieces), "kept": int(len(kept))}
    for path in graphs:
        model = onnx.load(str(path))
        try:
            entry["graph"] = embeddings.trim_graph(model, kept, tokenizer.unk_token_id)
        except ValueError as err:
            raise ExportError(f"--vocab_scripts: {err}") from None
        onnx.save(model, str(path))
    log(f"vocabulary trimmed to {', '.join(served)}: {len(kept)} of {entry['graph']['rows_before']} rows kept")
    entry["kept_ids"] = kept
    return entry


def trim_effect(ids: list[list[int]], kept: Any) -> dict[str, Any]:
    """How many held-out texts and tokens the trim maps to <unk>."""
    import numpy as np

    keep = set(kept.tolist())
    changed = [sum(i not in keep for i in row) for row in ids]
    tokens = sum(len(row) for row in ids)
    return {"texts": len(ids), "texts_changed": int(sum(c > 0 for c in changed)), "tokens": int(tokens),
            "tokens_changed": int(sum(changed)), "token_share_changed": float(np.sum(changed) / max(1, tokens))}


def write_stubs(tmp: Path, source: Source, optimization: dict[str, Any]) -> None:
    """Stubs so that a BundlePredictor can load the temp bundle (it gives the parity gate its ORT logits and the
    static calibration its feeds); both files are rewritten at the end. The stub carries the optimization entry:
    it names the onnxruntime fusions the sessions must skip, so the parity gate runs the graph exactly as served."""
    atomic_write_json(tmp / "calibration.json", {"by_precision": {p: {"temperature": 1.0} for p in ("fp32", "int8")}})
    atomic_write_json(tmp / "metadata.json", {"format": UNFINISHED_FORMAT, "max_length": source.max_length,
                                              "pad_token_id": source.tokenizer.pad_token_id or 0,
                                              "optimization": optimization})


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "numpy", "lightning", "fenlei"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return versions


def file_sizes(tmp: Path) -> dict[str, int]:
    # Hidden files are the export's own (its lock, intermediate graphs), not the bundle's.
    return {name: (tmp / name).stat().st_size for name in sorted(os.listdir(tmp))
            if (tmp / name).is_file() and name != "metadata.json" and not name.startswith(".")}


def bundle_metadata(source: Source, optimization: dict[str, Any], quantization: dict[str, Any], parity: dict[str, Any],
                    calibration: dict[str, Any], sizes: dict[str, int], command: list[str]) -> dict[str, Any]:
    """``metadata.json``: what the bundle is, where it came from, and the verdicts that let it ship."""
    from fenlei.serving.predictor import cpu_has_vnni

    return {
        "format": "fenlei-bundle", "format_version": 1,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source.description,
        "labels": len(source.label_names), "max_length": source.max_length,
        "pad_token_id": int(source.tokenizer.pad_token_id or 0),
        "text_fields": source.text_fields, "text_separator": source.text_separator,
        "inputs": onnx_tools.INPUT_NAMES, "output": "logits",
        "export": {"exporter": "torch.onnx.export(dynamo=False)", "opset": onnx_tools.OPSET,
                   "dynamic_axes": {"input_ids": ["batch", "sequence"], "attention_mask": ["batch", "sequence"]}},
        "optimization": optimization, "quantization": quantization, "parity": parity,
        "calibration": {p: e["report"] for p, e in calibration["by_precision"].items()},
        "sizes_bytes": sizes,
        "size_ratio_fp32_over_int8": sizes[FP32_GRAPH] / sizes[INT8_GRAPH],
        "versions": library_versions(),
        # The INT8 kernels differ by CPU (u8s8 saturation without VNNI): the gate's verdict holds for this kind.
        "export_cpu": {"vnni": cpu_has_vnni()},
        "command": " ".join(["python", "cli.py", "export", *command]),
    }


def write_metadata(tmp: Path, metadata: dict[str, Any]) -> None:
    """Written last, with the sha256 of the files that decide the logits (checked whenever the bundle is loaded); the
    bundle must then be complete and pass the same checks as at load time."""
    missing = [f for f in BUNDLE_FILES if f != "metadata.json" and not (tmp / f).is_file()]
    if missing:
        raise ExportError(f"bundle incomplete, missing {', '.join(missing)}")
    metadata["sha256"] = file_hashes(tmp)
    atomic_write_json(tmp / "metadata.json", metadata)
    for precision in PRECISIONS:
        try:
            load_bundle(tmp, precision, building=True)
        except BundleError as err:
            raise ExportError(f"the bundle written fails its own load check: {err}") from None
