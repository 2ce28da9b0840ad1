"""Frozen-LM sentence features for linear probes, cached on disk once per (model, layer, pooling, data, length).

Why cache: extracting hidden states is the expensive part (a forward pass of the LM over every text); fitting a
logistic regression or a small MLP on the features takes seconds. So the features of one data file are written
once to ``<cache>/<key>/features.npy`` and every later head fit (another head, another C, class weights on or off)
reads them. The key hashes everything that changes the features: the model name and, for a local folder, its
config and weight-file sizes; the layer, pooling, max_length and text fields; and the sha256 of the data file.
Labels are not part of the features (they are read from the data file every time), so label remapping needs no
re-extraction.

Layers: ``hidden_states[0]`` is the embedding output and ``hidden_states[i]`` the output of block ``i``; an
integer picks that index (negative counts from the end), a float in (0, 1] picks ``round(f * num_layers)``
(0.5 = the middle block). Mid-depth layers of decoder LMs are often better features than the last one, which is
specialised for next-token prediction.

Pooling: ``mean`` over real tokens, ``last`` = the last real token (the one a causal LM has seen the whole text
from), ``first`` = the first real token (CLS for BERT-style encoders). Padding is masked whichever side it is on,
and position ids are computed from the attention mask, so left and right padding give the same features
(tested).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from fenlei.io import file_sha256

Pooling = Literal["mean", "last", "first"]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines the features of one data file."""

    model: str
    layer: Union[int, float] = 0.5
    pooling: Pooling = "mean"
    max_length: int = 128
    text_fields: tuple[str, ...] = ("text",)
    text_separator: str = " "
    extra: dict[str, Any] = field(default_factory=dict)


def _model_fingerprint(name: str) -> str:
    """A hub id is its own fingerprint; a local folder adds its config and weight-file sizes (a retrained model
    saved under the same path must not reuse old features)."""
    path = Path(name)
    if not path.is_dir():
        return name
    parts = [str(path.resolve())]
    config = path / "config.json"
    if config.is_file():
        parts.append(hashlib.sha256(config.read_bytes()).hexdigest())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        parts.append(f"{weights.name}:{weights.stat().st_size}:{int(weights.stat().st_mtime)}")
    return "|".join(parts)


def cache_key(spec: FeatureSpec, data_sha256: str) -> str:
    payload = asdict(spec)
    payload["model"] = _model_fingerprint(spec.model)
    payload["data_sha256"] = data_sha256
    payload["version"] = 1
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def default_cache_root() -> Path:
    from fenlei.pretrained import cache_dir

    return cache_dir() / "probe_features"


def resolve_layer(layer: Union[int, float], num_layers: int) -> int:
    """Index into ``hidden_states`` (length ``num_layers + 1``) for an int index or a depth fraction."""
    if isinstance(layer, float):  # a float is always a fraction of depth (1.0 = the last block)
        if not 0.0 < layer <= 1.0:
            raise ValueError(f"a fractional layer must be in (0, 1], got {layer}")
        return max(1, round(layer * num_layers))
    index = int(layer)
    if not -(num_layers + 1) <= index <= num_layers:
        raise ValueError(f"layer {index} out of range for a model with {num_layers} layers (hidden_states 0..{num_layers})")
    return index % (num_layers + 1)


def pool(hidden: Any, attention_mask: Any, pooling: Pooling) -> Any:
    """``[B, T, H]`` hidden states to ``[B, H]``, ignoring padded positions on either side."""
    import torch

    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
    positions = torch.arange(hidden.shape[1], device=hidden.device).expand_as(attention_mask)
    real = attention_mask.bool()
    if pooling == "last":
        index = torch.where(real, positions, -1).max(dim=1).values
    elif pooling == "first":
        index = torch.where(real, positions, hidden.shape[1]).min(dim=1).values
    else:
        raise ValueError(f"unknown pooling {pooling!r}; choose mean, last or first")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def resolve_device(device: str = "auto") -> str:
    """``auto``: the GPU when torch sees one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_backbone(name: str, device: str = "cpu") -> Any:
    """The frozen base model (no LM head): ``AutoModel`` works for encoders and decoders alike."""
    import torch
    from transformers import AutoModel

    from fenlei.pretrained import PROBE_OFFLINE_CHOICE, from_pretrained

    model = from_pretrained(AutoModel.from_pretrained, name, option="--model", offline_choice=PROBE_OFFLINE_CHOICE,
                            dtype=torch.float32)
    return model.eval().requires_grad_(False).to(resolve_device(device))


def load_feature_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    from fenlei.pretrained import PROBE_OFFLINE_CHOICE, from_pretrained

    tokenizer = from_pretrained(AutoTokenizer.from_pretrained, name, option="--model", offline_choice=PROBE_OFFLINE_CHOICE)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def _num_layers(model: Any) -> int:
    config = getattr(model.config, "text_config", model.config)
    return int(config.num_hidden_layers)


def extract(
    model: Any, tokenizer: Any, texts: list[str], layer: Union[int, float], pooling: Pooling, max_length: int,
    batch_size: int = 16,
) -> np.ndarray:
    """Pooled hidden states ``[N, H]`` float32; texts are sorted by length into batches (less padding)."""
    import torch

    index = resolve_layer(layer, _num_layers(model))
    device = next(model.parameters()).device
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out = np.zeros((len(texts), 0), dtype=np.float32)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    left = getattr(tokenizer, "padding_side", "right") == "left"
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            seq = encoded[i]
            sl = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[r, sl], mask[r, sl] = torch.tensor(seq), 1
        ids, mask = ids.to(device), mask.to(device)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "output_hidden_states": True}
        if takes_positions:
            # Positions from the mask: a real token gets the same position whatever the padding side.
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        with torch.inference_mode():
            hidden = model(**kwargs).hidden_states[index]
            pooled = pool(hidden.float(), mask, pooling).cpu().numpy()
        if out.shape[1] == 0:
            out = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
        out[rows] = pooled
    return out


def cached_features(
    spec: FeatureSpec,
    data_path: str | Path,
    texts: list[str],
    cache_root: Optional[str | Path] = None,
    batch_size: int = 16,
    num_threads: Optional[int] = None,
    device: str = "auto",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of ``texts`` (read from ``data_path``) from the cache, extracting them on a miss.

    Returns ``(features, meta)``; ``meta["from_cache"]`` says whether the model ran, and ``meta`` keeps the
    extraction speed (``examples_per_s``) measured when the features were made.
    """
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    key = cache_key(spec, file_sha256(data_path))
    folder = root / key
    if (folder / "meta.json").is_file():
        meta = json.loads((folder / "meta.json").read_text())
        features = np.load(folder / "features.npy")
        if features.shape[0] == len(texts):
            return features, {**meta, "from_cache": True, "cache_dir": str(folder)}
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
    model = load_backbone(spec.model, device)
    tokenizer = load_feature_tokenizer(spec.model)
    start = time.perf_counter()
    features = extract(model, tokenizer, texts, spec.layer, spec.pooling, spec.max_length, batch_size)
    seconds = time.perf_counter() - start
    meta = {
        "spec": asdict(spec),
        "data_file": str(data_path),
        "num_examples": len(texts),
        "dim": int(features.shape[1]),
        "layer_index": resolve_layer(spec.layer, _num_layers(model)),
        "num_layers": _num_layers(model),
        "extract_seconds": round(seconds, 3),
        "examples_per_s": round(len(texts) / max(seconds, 1e-9), 2),
        "torch_threads": torch.get_num_threads(),
        "device": str(next(model.parameters()).device),
    }
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{key}-") as tmp:
        staged = Path(tmp) / key
        staged.mkdir()
        np.save(staged / "features.npy", features)
        (staged / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        if not (folder / "meta.json").is_file():
            if folder.exists():
                import shutil

                shutil.rmtree(folder)
            os.replace(staged, folder)  # atomic: a killed extraction never leaves a half-written cache entry
    return features, {**meta, "from_cache": False, "cache_dir": str(folder)}
