"""``fenlei probe``: linear probe (or one-layer MLP) on a frozen LM's hidden states.

    fenlei probe --model packaged:gemma3-270m --data_dir ../shared/data/endava_tickets_partial \\
        --layer 0.5 --pooling mean --head logreg mlp --class_weight balanced --out runs/probe/endava.json

The first run extracts and caches the features of the train and test files (the slow part, reported as
``examples_per_s``); every later run with the same model, layer, pooling, max_length and data files reads them
from the cache and only fits the heads (seconds). Prints and writes (``--out``, atomically) a JSON report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from datamodules.readers import DataError, read_records, resolve_data_file
from datamodules.splits import label_sort_key
from fenlei.errors import OptionError, exit_status_of


def check_device(value: str) -> str:
    """``auto``, or a torch device string this machine has (checked before any data is read or model loaded)."""
    if value == "auto":
        return value
    import torch

    try:
        device = torch.device(value)
    except RuntimeError:
        raise OptionError(f"--device: expected auto, cpu, cuda or cuda:N, got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"--device: {value!r}: torch sees no CUDA GPU on this machine (use auto or cpu)")
    return value


def _data_paths(train_file: str, test_file: str, data_dir: Optional[str]) -> dict[str, Path]:
    paths = {}
    for split, name in (("train", train_file), ("test", test_file)):
        path = resolve_data_file(name, data_dir)
        if path is None:
            raise DataError(f"{split}_file: no file {name!r}" + (f" in data_dir {data_dir!r}" if data_dir else ""))
        paths[split] = path
    return paths


def _split(path: Path, text_fields: Sequence[str], label_field: str, text_separator: str,
           label_map: Optional[dict[str, Any]]) -> tuple[list[str], list[str]]:
    records = read_records(path, list(text_fields), label_field, text_separator)
    mapping = {str(k): str(v) for k, v in (label_map or {}).items()}
    return [r.text for r in records], [mapping.get(str(r.label), str(r.label)) for r in records]


def probe(*, model: str, data_dir: Optional[str] = None, train_file: str = "train", test_file: str = "test",
          text_fields: Sequence[str] = ("text",), text_separator: str = " ", label_field: str = "label",
          label_map: Optional[dict[str, Any]] = None, layer: Union[int, float] = 0.5,
          pooling: Literal["mean", "last", "first"] = "mean", max_length: int = 128, batch_size: int = 16,
          head: Sequence[Literal["logreg", "mlp"]] = ("logreg",), class_weight: Literal["none", "balanced"] = "none",
          C: float = 1.0, mlp_hidden: int = 256, mlp_epochs: int = 100, cache_dir: Optional[str] = None,
          num_threads: Optional[int] = None, device: str = "auto", out: Optional[str] = None) -> dict[str, Any]:
    """Linear probe (or one-layer MLP) on a frozen LM's hidden states; prints (and writes) the JSON report.

    Args:
        model: HF id or folder, a .gguf file, or packaged:gemma3-270m etc.
        data_dir: folder with train/test files (like ../shared/data/NAME)
        train_file: train file name or path
        test_file: test file name or path
        text_fields: fields joined into the text
        text_separator: separator between the text fields
        label_field: field holding the label
        label_map: JSON object remapping raw labels, e.g. '{"0": "high", "1": "high", "2": "low"}'
        layer: hidden_states index (int) or depth fraction (a number with a dot, like 0.5 or 1.0)
        pooling: how token states become one vector
        max_length: longest input in tokens
        batch_size: texts per extraction batch
        head: heads fitted on the features
        class_weight: class weighting of the heads
        C: inverse L2 strength of the logistic regression
        mlp_hidden: hidden units of the MLP head
        mlp_epochs: training epochs of the MLP head
        cache_dir: feature cache (default: $FENLEI_CACHE/probe_features)
        num_threads: torch threads for extraction
        device: extraction device: auto (GPU if torch sees one), cpu, cuda, cuda:1
        out: write the JSON report here
    """
    from fenlei.probe.features import FeatureSpec, cached_features

    check_device(device)
    if not text_fields or not head:
        raise OptionError("--text_fields and --head need at least one value each")
    paths = _data_paths(train_file, test_file, data_dir)
    spec = FeatureSpec(model=model, layer=layer, pooling=pooling, max_length=max_length,
                       text_fields=tuple(text_fields), text_separator=text_separator)
    data, extraction = {}, {}
    for split, path in paths.items():
        texts, labels = _split(path, text_fields, label_field, text_separator, label_map)
        features, meta = cached_features(spec, path, texts, cache_dir, batch_size, num_threads, device)
        data[split] = (features, labels)
        extraction[split] = {k: meta.get(k) for k in ("from_cache", "examples_per_s", "extract_seconds",
                                                      "num_examples", "layer_index", "num_layers", "dim", "cache_dir")}
    label_names = sorted(set(data["train"][1]), key=label_sort_key)
    report: dict[str, Any] = {"model": model, "layer": layer, "pooling": pooling, "max_length": max_length,
                              "label_names": label_names,
                              "unseen_test_labels": sorted(set(data["test"][1]) - set(label_names), key=label_sort_key),
                              "extraction": extraction, "heads": {}}
    for kind in head:
        report["heads"][kind] = fit_head(kind, data, label_names, class_weight, C, mlp_hidden, mlp_epochs)
    write_report(report, out)
    return report


def fit_head(kind: str, data: dict[str, tuple[np.ndarray, list[str]]], label_names: list[str], class_weight: str,
             C: float, mlp_hidden: int, mlp_epochs: int) -> dict[str, Any]:
    """Fit one head on the train features; its metrics on the test features."""
    from fenlei.probe.heads import StandardisedHead, classification_report

    index = {label: i for i, label in enumerate(label_names)}
    x_train, y_train = data["train"][0], np.array([index[v] for v in data["train"][1]])
    keep = np.array([v in index for v in data["test"][1]])  # test labels never seen in train cannot be predicted
    x_test = data["test"][0]
    y_test = np.array([index.get(v, -1) for v in data["test"][1]])
    fitted = StandardisedHead(kind, len(label_names), None if class_weight == "none" else "balanced",
                              c=C, hidden=mlp_hidden, epochs=mlp_epochs)
    fitted.fit(x_train, y_train)
    pred = fitted.predict_proba(x_test).argmax(1)
    metrics = classification_report(y_test, pred)
    metrics["accuracy_seen_labels"] = float((pred[keep] == y_test[keep]).mean()) if keep.any() else None
    metrics["fit_seconds"] = round(fitted.fit_seconds, 3)
    metrics["class_weight"] = class_weight
    return metrics


def write_report(report: dict[str, Any], out: Optional[str]) -> None:
    """Print the report as JSON and, with ``out``, write it there too (atomically)."""
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if out:
        from fenlei.io import atomic_write_text

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), text + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of ``fenlei probe``; returns 0, raises DataError or OptionError on bad input."""
    from fenlei.typed_cli import run_typed

    return run_typed(probe, sys.argv[1:] if argv is None else argv, prog="fenlei probe", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(exit_status_of(main))
