"""``python cli.py probe``: linear probe (or one-layer MLP) on a frozen LM's hidden states.

    python cli.py probe --model packaged:gemma3-270m --data_dir ../shared/data/endava_tickets_partial \\
        --layer 0.5 --pooling mean --head logreg mlp --class_weight balanced --out runs/probe/endava.json

The first run extracts and caches the features of the train and test files (the slow part, reported as
``examples_per_s``); every later run with the same model, layer, pooling, max_length and data files reads them
from the cache and only fits the heads (seconds). Prints and writes (``--out``, atomically) a JSON report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from datamodules.readers import DataError, read_records, resolve_data_file
from datamodules.splits import label_sort_key


def parse_layer(value: str) -> Union[int, float]:
    """``"6"`` / ``"-1"``: an index into hidden_states; ``"0.5"``: a fraction of depth."""
    try:
        return float(value) if "." in value else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"layer must be an integer index or a fraction like 0.5, got {value!r}") from None


def parse_device(value: str) -> str:
    """``auto``, or a torch device string this machine has (checked here, before any model is loaded)."""
    if value == "auto":
        return value
    import torch

    try:
        device = torch.device(value)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {value!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{value!r}: torch sees no CUDA GPU on this machine (use auto or cpu)")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cli.py probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF id or folder, a .gguf file, or packaged:gemma3-270m etc.")
    p.add_argument("--data_dir", help="folder with train/test files (like ../shared/data/NAME)")
    p.add_argument("--train_file", default="train")
    p.add_argument("--test_file", default="test")
    p.add_argument("--text_fields", nargs="+", default=["text"])
    p.add_argument("--text_separator", default=" ")
    p.add_argument("--label_field", default="label")
    p.add_argument("--label_map", type=json.loads, default=None,
                   help='JSON object remapping raw labels, e.g. \'{"0": "high", "1": "high", "2": "low"}\'')
    p.add_argument("--layer", type=parse_layer, default=0.5, help="hidden_states index (int) or depth fraction")
    p.add_argument("--pooling", choices=["mean", "last", "first"], default="mean")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--head", nargs="+", choices=["logreg", "mlp"], default=["logreg"])
    p.add_argument("--class_weight", choices=["none", "balanced"], default="none")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    p.add_argument("--mlp_hidden", type=int, default=256)
    p.add_argument("--mlp_epochs", type=int, default=100)
    p.add_argument("--cache_dir", default=None, help="feature cache (default: $FENLEI_CACHE/probe_features)")
    p.add_argument("--num_threads", type=int, default=None, help="torch threads for extraction")
    p.add_argument("--device", type=parse_device, default="auto", help="extraction device: auto (GPU if torch sees one), cpu, cuda, cuda:1")
    p.add_argument("--out", default=None, help="write the JSON report here")
    return p


def _split(path: Path, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    records = read_records(path, args.text_fields, args.label_field, args.text_separator)
    mapping = {str(k): str(v) for k, v in (args.label_map or {}).items()}
    return [r.text for r in records], [mapping.get(str(r.label), str(r.label)) for r in records]


def run(args: argparse.Namespace, model_loader: Optional[Any] = None) -> dict[str, Any]:
    from fenlei.probe.features import FeatureSpec, cached_features
    from fenlei.probe.heads import StandardisedHead, classification_report

    paths = {}
    for split, name in (("train", args.train_file), ("test", args.test_file)):
        path = resolve_data_file(name, args.data_dir)
        if path is None:
            raise DataError(f"{split}_file: no file {name!r}" + (f" in data_dir {args.data_dir!r}" if args.data_dir else ""))
        paths[split] = path
    spec = FeatureSpec(model=args.model, layer=args.layer, pooling=args.pooling, max_length=args.max_length,
                       text_fields=tuple(args.text_fields), text_separator=args.text_separator)
    data, extraction = {}, {}
    for split, path in paths.items():
        texts, labels = _split(path, args)
        features, meta = cached_features(spec, path, texts, args.cache_dir, args.batch_size, args.num_threads, args.device)
        data[split] = (features, labels)
        extraction[split] = {k: meta.get(k) for k in ("from_cache", "examples_per_s", "extract_seconds",
                                                      "num_examples", "layer_index", "num_layers", "dim", "cache_dir")}
    label_names = sorted(set(data["train"][1]), key=label_sort_key)
    index = {label: i for i, label in enumerate(label_names)}
    unseen = sorted(set(data["test"][1]) - set(index), key=label_sort_key)
    x_train, y_train = data["train"][0], np.array([index[v] for v in data["train"][1]])
    keep = np.array([v in index for v in data["test"][1]])  # test labels never seen in train cannot be predicted
    x_test = data["test"][0]
    y_test = np.array([index.get(v, -1) for v in data["test"][1]])
    report: dict[str, Any] = {"model": args.model, "layer": args.layer, "pooling": args.pooling,
                              "max_length": args.max_length, "label_names": label_names,
                              "unseen_test_labels": unseen, "extraction": extraction, "heads": {}}
    for kind in args.head:
        head = StandardisedHead(kind, len(label_names), None if args.class_weight == "none" else "balanced",
                                c=args.C, hidden=args.mlp_hidden, epochs=args.mlp_epochs)
        head.fit(x_train, y_train)
        pred = head.predict_proba(x_test).argmax(1)
        metrics = classification_report(y_test, pred)
        metrics["accuracy_seen_labels"] = float((pred[keep] == y_test[keep]).mean()) if keep.any() else None
        metrics["fit_seconds"] = round(head.fit_seconds, 3)
        metrics["class_weight"] = args.class_weight
        report["heads"][kind] = metrics
    return report


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except DataError as err:
        print(f"fenlei: data error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=1, ensure_ascii=False)
    print(text)
    if args.out:
        from fenlei.io import atomic_write_text

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), text + "\n")
    return 0
