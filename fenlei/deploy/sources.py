"""What an export starts from: a fenlei run (loaded by :mod:`fenlei.training.run_dir`) or an HF sequence
classifier folder, reduced to one :class:`Source` (logits-only model, tokenizer, labels, held-out data)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from datamodules.readers import DataError, read_records
from fenlei.deploy.errors import ExportError
from fenlei.io import file_sha256


@dataclass(frozen=True)
class SourceOptions:
    """Where the model and its held-out data come from (the ``source`` options of ``fenlei export``)."""

    ckpt_path: Optional[str] = None
    run_dir: Optional[str] = None
    run_config: Optional[str] = None
    hf_model: Optional[str] = None
    data_dir: Optional[str] = None
    eval_file: Optional[str] = None
    text_fields: Optional[list[str]] = None
    label_field: str = "label"
    max_length: Optional[int] = None


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


def load_source(options: SourceOptions, train_texts: bool = False) -> Source:
    """The source the options name (exactly one of a fenlei checkpoint/run and an HF folder). ``train_texts``:
    also read the training texts (static quantization calibrates on them)."""
    if bool(options.ckpt_path) == bool(options.hf_model):
        raise ExportError("give exactly one of --ckpt_path and --hf_model")
    return load_hf_source(options, train_texts) if options.hf_model else load_fenlei_source(options, train_texts)


def labels_to_ids(records: Sequence[Any], label_names: list[str], where: str) -> np.ndarray:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({r.label for r in records if r.label not in index})
    if unknown:
        raise DataError(f"{where}: labels not known to the model: {', '.join(map(repr, unknown[:5]))}")
    return np.asarray([index[r.label] for r in records], dtype=np.int64)


def prepare_for_export(backbone: Any) -> None:
    """Eager attention: onnxruntime's fusions recognise its MatMul-Softmax-MatMul pattern, not an SDPA export."""
    setter = getattr(backbone, "set_attn_implementation", None)
    if setter is not None:
        # Architectures without eager attention (or without the switch) export as they are.
        with contextlib.suppress(ValueError, NotImplementedError, ImportError):
            setter("eager")


def _logits_only(inner: Any, hf_output: bool) -> Any:
    """The graph returns logits only (fp32), whatever the module returns."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            if hf_output:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits.float()
            return self.inner(input_ids, attention_mask).float()

    return LogitsOnly().eval()


def _shape(config: Any) -> dict[str, Any]:
    return {"model_type": getattr(config, "model_type", None),
            "num_heads": int(getattr(config, "num_attention_heads", 0) or 0),
            "hidden_size": int(getattr(config, "hidden_size", 0) or 0)}


def load_fenlei_source(options: SourceOptions, train_texts: bool = False) -> Source:
    """Model, tokenizer and data of a fenlei run, rebuilt from the model and DataModule classes its config
    records (EncoderClassifier, DecoderSequenceClassifier or any module with the same forward)."""
    from fenlei.training.run_dir import load_run

    run = load_run(options.ckpt_path or "", options.run_dir, options.run_config,
                   {"data_dir": options.data_dir, "max_length": options.max_length or None})
    dm, model = run.datamodule, run.model
    saved_labels = model.hparams.get("label_names")
    if saved_labels is not None and list(saved_labels) != list(dm.label_names):
        raise ExportError(f"{run.checkpoint}: the checkpoint's label_names differ from the data's labels in "
                          f"{run.config_path}")
    label_names = list(saved_labels or dm.label_names)
    text_fields, sep = list(dm.text_fields), dm.text_separator
    if options.eval_file:
        records, where = read_records(Path(options.eval_file), text_fields, dm.label_field, sep), str(options.eval_file)
    else:
        records = dm.split_records("validation")
        where = f"validation split of {dm.val_path}" if dm.val_path else f"validation split held out of {dm.train_path}"
    backbone = getattr(model, "backbone", model)
    lora_merged = False
    if hasattr(backbone, "merge_and_unload") and hasattr(backbone, "peft_config"):
        # A LoRA run (e.g. DecoderSequenceClassifier): fold the adapters into the weights, so that the ONNX graph
        # holds plain matrix products instead of base + two low-rank products per layer.
        model.backbone = backbone = backbone.merge_and_unload()
        lora_merged = True
    prepare_for_export(backbone)
    ckpt = run.checkpoint
    return Source(
        model=_logits_only(model, hf_output=False), tokenizer=dm.tokenizer, label_names=label_names,
        max_length=int(dm.max_length), **_shape(getattr(backbone, "config", None)),
        eval_texts=[r.text for r in records], eval_labels=labels_to_ids(records, label_names, where),
        eval_source=where, train_texts=[r.text for r in dm.split_records("train")] if train_texts else [],
        text_fields=text_fields, text_separator=sep,
        description={"kind": "fenlei_checkpoint", "checkpoint": str(ckpt.resolve()), "checkpoint_sha256": file_sha256(ckpt),
                     "run_dir": str(run.run_dir.resolve()) if run.run_dir else None,
                     "config_file": str(run.config_path.resolve()), "config": run.config,
                     "model_class": run.model_class_path, "data_class": run.data_class_path, "lora_merged": lora_merged},
    )


def load_hf_source(options: SourceOptions, train_texts: bool = False) -> Source:
    """An HF ``AutoModelForSequenceClassification`` folder (encoder or decoder; merge LoRA adapters first)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from datamodules.readers import resolve_data_file
    from fenlei.deploy.staging import HF_MARKER_FILE, is_bundle, is_hf_folder

    folder = Path(options.hf_model or "")
    if is_bundle(folder):
        raise ExportError(f"--hf_model {folder}: a fenlei ONNX bundle (its config.json holds the labels only), not an "
                          "HF model folder")
    if is_hf_folder(folder) and (folder / "modeling_fenlei.py").is_file():
        raise ExportError(f"--hf_model {folder}: a fenlei --format hf folder with custom model code; export the run "
                          f"it came from with --ckpt_path (see its {HF_MARKER_FILE})")
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
    max_length = options.max_length or min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
    eval_path = Path(options.eval_file) if options.eval_file else resolve_data_file("validation", options.data_dir)
    if eval_path is None:
        raise ExportError("--hf_model needs held-out data: --eval_file FILE or --data_dir with validation.jsonl")
    fields = list(options.text_fields or ["text"])
    records = read_records(eval_path, fields, options.label_field)
    train_path = resolve_data_file("train", options.data_dir) if options.data_dir else None
    if train_texts and train_path is None:
        raise ExportError("--quantization static needs training texts: --data_dir with train.jsonl")
    prepare_for_export(getattr(model, "base_model", model))
    cfg = model.config
    return Source(
        model=_logits_only(model, hf_output=True), tokenizer=tokenizer, label_names=label_names, max_length=max_length,
        **_shape(cfg), eval_texts=[r.text for r in records],
        eval_labels=labels_to_ids(records, label_names, str(eval_path)), eval_source=str(eval_path),
        train_texts=[r.text for r in read_records(train_path, fields, None)] if train_texts and train_path else [],
        text_fields=fields,
        description={"kind": "hf_sequence_classification", "hf_model": str(folder.resolve()),
                     "architectures": getattr(cfg, "architectures", None)},
    )
