"""Frozen-LM sentence features for linear probes, cached on disk once per (model, layer, pooling, data, length);
several layers come from one forward pass (:func:`extract_layers`, :class:`FeatureExtractor`).

Why cache: extracting hidden states is the expensive part (a forward pass of the LM over every text); fitting a
logistic regression or a small MLP on the features takes seconds. So the features of one data file are written
once to ``<cache>/<key>/features.npy`` and every later head fit (another head, another C, class weights on or off)
reads them. The key hashes everything that changes the features: the model name and, for a local folder, its
config and weight-file sizes; the layer, pooling, max_length and text fields; and the sha256 of the data file.
Labels are not part of the features (they are read from the data file every time), so label remapping needs no
re-extraction. Each layer has its own entry, so a sweep's features serve every later run with any of its layers.
Extraction shows a tqdm bar (texts/s) when stderr is a terminal (:func:`progress_bar`).

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
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
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


def progress_bar(total: int, desc: str, enabled: bool = True) -> Any:
    """A tqdm bar over texts (rate in text/s) on stderr when it is a terminal and ``enabled``; otherwise a silent
    stand-in with the same ``update``/``close`` (logs and pipes get no carriage-return noise; the command prints a
    one-line summary instead)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="text", file=sys.stderr, dynamic_ncols=True, leave=False,
                disable=not (enabled and sys.stderr.isatty()))


def extract_layers(
    model: Any, tokenizer: Any, texts: list[str], layers: Sequence[Union[int, float]], pooling: Pooling,
    max_length: int, batch_size: int = 16, progress: Any = None,
) -> list[np.ndarray]:
    """Pooled hidden states ``[N, H]`` float32 of every layer in ``layers`` (in that order), from ONE forward pass
    per batch: ``output_hidden_states`` returns every block's output anyway, so a layer sweep costs one
    extraction, not one per layer. Texts are sorted by length into batches (less padding); ``progress`` (a
    :func:`progress_bar`) advances by the texts of each batch."""
    import torch

    num_layers = _num_layers(model)
    indices = [resolve_layer(layer, num_layers) for layer in layers]
    wanted = sorted(set(indices))
    device = next(model.parameters()).device
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
    out: dict[int, np.ndarray] = {}
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
            hidden_states = model(**kwargs).hidden_states
            for index in wanted:
                pooled = pool(hidden_states[index].float(), mask, pooling).cpu().numpy()
                if index not in out:
                    out[index] = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
                out[index][rows] = pooled
        if progress is not None:
            progress.update(len(rows))
    if not texts:
        return [np.zeros((0, 0), dtype=np.float32) for _ in indices]
    return [out[index] for index in indices]


def extract(
    model: Any, tokenizer: Any, texts: list[str], layer: Union[int, float], pooling: Pooling, max_length: int,
    batch_size: int = 16,
) -> np.ndarray:
    """Pooled hidden states ``[N, H]`` float32 of one layer (see :func:`extract_layers`)."""
    return extract_layers(model, tokenizer, texts, [layer], pooling, max_length, batch_size)[0]


def layer_name(layer: Union[int, float]) -> str:
    """The layer as written: ``1`` (block 1) and ``1.0`` (the last block) are different layers, though equal as
    numbers (and as dict keys)."""
    return str(layer)


class FeatureExtractor:
    """Features of data files for several layers at once, from the cache where they are and otherwise from one
    forward pass over the file; the model is loaded at the first miss and kept for the next file.

    Every layer keeps its own cache entry (key: :func:`cache_key` of the spec with that layer), so a later run
    with any subset of the layers, or a single ``--layer``, reads them without running the model.
    """

    def __init__(self, model: str, pooling: Pooling = "mean", max_length: int = 128,
                 text_fields: Sequence[str] = ("text",), text_separator: str = " ",
                 cache_root: Optional[str | Path] = None, batch_size: int = 16, num_threads: Optional[int] = None,
                 device: str = "auto", progress: bool = True) -> None:
        self.model_name, self.pooling, self.max_length = model, pooling, max_length
        self.text_fields, self.text_separator = tuple(text_fields), text_separator
        self.root = Path(cache_root) if cache_root is not None else default_cache_root()
        self.batch_size, self.num_threads, self.device, self.progress = batch_size, num_threads, device, progress
        self._model: Any = None
        self._tokenizer: Any = None

    def spec(self, layer: Union[int, float]) -> FeatureSpec:
        return FeatureSpec(model=self.model_name, layer=layer, pooling=self.pooling, max_length=self.max_length,
                           text_fields=self.text_fields, text_separator=self.text_separator)

    def backbone(self) -> tuple[Any, Any]:
        """The frozen model and its tokenizer, loaded once."""
        if self._model is None:
            import torch

            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            self._model = load_backbone(self.model_name, self.device)
            self._tokenizer = load_feature_tokenizer(self.model_name)
        return self._model, self._tokenizer

    def _cached(self, folder: Path, n: int) -> Optional[tuple[np.ndarray, dict[str, Any]]]:
        if not (folder / "meta.json").is_file():
            return None
        features = np.load(folder / "features.npy", allow_pickle=False)
        if features.shape[0] != n:
            return None
        return features, json.loads((folder / "meta.json").read_text())

    def features(self, data_path: str | Path, texts: list[str], layers: Sequence[Union[int, float]],
                 desc: str = "features") -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``({layer_name: [N, H] features}, meta)`` of ``texts`` (read from ``data_path``) for every layer.

        ``meta``: ``from_cache`` (True when no layer needed the model), ``extract_seconds`` and ``examples_per_s``
        of the pass that made them (texts per second of the whole multi-layer pass), ``layer_indices``,
        ``num_layers``, ``dim``, ``cache_dirs``."""
        data_sha = file_sha256(data_path)
        folders = {layer_name(layer): self.root / cache_key(self.spec(layer), data_sha) for layer in layers}
        found: dict[str, np.ndarray] = {}
        metas: dict[str, dict[str, Any]] = {}
        missing = []
        for layer in layers:
            hit = self._cached(folders[layer_name(layer)], len(texts))
            if hit is None:
                missing.append(layer)
            else:
                found[layer_name(layer)], metas[layer_name(layer)] = hit
        pass_meta: dict[str, Any] = {}
        if missing:
            pass_meta = self._extract(data_path, texts, missing, folders, found, metas, desc)
        first = metas[layer_name(layers[0])]
        meta = {
            "from_cache": not missing,
            "layers_extracted": [layer_name(layer) for layer in missing],
            "examples_per_s": pass_meta.get("examples_per_s", first.get("examples_per_s")),
            "extract_seconds": pass_meta.get("extract_seconds", first.get("extract_seconds")),
            "num_examples": len(texts),
            "num_layers": first.get("num_layers"),
            "dim": first.get("dim"),
            "layer_indices": {name: m.get("layer_index") for name, m in metas.items()},
            "cache_dirs": {name: str(folder) for name, folder in folders.items()},
        }
        return {layer_name(layer): found[layer_name(layer)] for layer in layers}, meta

    def _extract(self, data_path: str | Path, texts: list[str], layers: list[Union[int, float]],
                 folders: dict[str, Path], found: dict[str, np.ndarray], metas: dict[str, dict[str, Any]],
                 desc: str) -> dict[str, Any]:
        import torch

        model, tokenizer = self.backbone()
        bar = progress_bar(len(texts), desc, self.progress)
        start = time.perf_counter()
        try:
            outputs = extract_layers(model, tokenizer, texts, layers, self.pooling, self.max_length, self.batch_size,
                                     bar)
        finally:
            bar.close()
        seconds = time.perf_counter() - start
        num_layers = _num_layers(model)
        pass_meta = {"extract_seconds": round(seconds, 3), "examples_per_s": round(len(texts) / max(seconds, 1e-9), 2),
                     "layers_in_pass": len(layers)}
        for layer, features in zip(layers, outputs, strict=True):
            meta = {
                "spec": asdict(self.spec(layer)),
                "data_file": str(data_path),
                "num_examples": len(texts),
                "dim": int(features.shape[1]),
                "layer_index": resolve_layer(layer, num_layers),
                "num_layers": num_layers,
                **pass_meta,
                "torch_threads": torch.get_num_threads(),
                "device": str(next(model.parameters()).device),
            }
            _store(folders[layer_name(layer)], features, meta)
            found[layer_name(layer)], metas[layer_name(layer)] = features, meta
        return pass_meta


def _store(folder: Path, features: np.ndarray, meta: dict[str, Any]) -> None:
    """One cache entry, written to a temporary sibling and renamed into place: a killed extraction never leaves a
    half-written entry."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}-") as tmp:
        staged = Path(tmp) / folder.name
        staged.mkdir()
        np.save(staged / "features.npy", features)
        (staged / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        if not (folder / "meta.json").is_file():
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(staged, folder)


def cached_features(
    spec: FeatureSpec,
    data_path: str | Path,
    texts: list[str],
    cache_root: Optional[str | Path] = None,
    batch_size: int = 16,
    num_threads: Optional[int] = None,
    device: str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Features of ``texts`` (read from ``data_path``) for ``spec``'s one layer, from the cache or extracted.

    Returns ``(features, meta)``; ``meta["from_cache"]`` says whether the model ran, and ``meta`` keeps the
    extraction speed (``examples_per_s``) measured when the features were made.
    """
    extractor = FeatureExtractor(spec.model, spec.pooling, spec.max_length, spec.text_fields, spec.text_separator,
                                 cache_root, batch_size, num_threads, device, progress)
    by_layer, meta = extractor.features(data_path, texts, [spec.layer])
    name = layer_name(spec.layer)
    return by_layer[name], {**meta, "layer_index": meta["layer_indices"][name], "cache_dir": meta["cache_dirs"][name]}
