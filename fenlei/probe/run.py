"""``fenlei probe``: linear probe (or one-layer MLP) on a frozen LM's hidden states, over one or several layers,
saved as a model that ``fenlei predict --probe`` and ``fenlei infer --probe`` use.

    fenlei probe --model packaged:gemma3-270m --data_dir ../shared/data/endava_tickets_partial \\
        --layers 0.25 0.5 0.75 -1 --pooling mean --head logreg --class_weight balanced --run_dir runs/probe/endava
    fenlei probe --config configs/probe/endava_gemma3_layers.yaml

One forward pass per batch gives the features of every layer asked for, each cached on disk (the slow part; a
progress bar on a terminal, ``examples_per_s`` in the report); every later run with the same model, pooling,
max_length and data files reads them from the cache and only fits heads (seconds). A head per (layer, head kind)
is fitted on train and scored on validation and test (the sweep table); the best by validation macro-F1 is
calibrated on validation and, with ``--run_dir``, saved there (``fenlei.probe.store``). Prints (and writes with
``--out``, atomically) a JSON report.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from datamodules.readers import DataError, read_records, resolve_data_file
from datamodules.splits import label_sort_key, stratified_split
from fenlei.errors import OptionError, exit_status_of
from fenlei.text_limits import char_budget, cut_text

DEFAULT_VAL_FILE = "validation"
DEFAULT_LAYER = 0.5


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


@dataclass
class SplitData:
    """The texts and labels of one data file (texts joined from the text fields and cut as the predictor cuts)."""

    path: Path
    texts: list[str]
    labels: list[str]
    lines: list[int]


def _required(name: str, field: str, data_dir: Optional[str]) -> Path:
    path = resolve_data_file(name, data_dir)
    if path is None:
        raise DataError(f"{field}: no file {name!r}" + (f" in data_dir {data_dir!r}" if data_dir else ""))
    return path


def _data_paths(train_file: str, val_file: Optional[str], test_file: str,
                data_dir: Optional[str]) -> dict[str, Optional[Path]]:
    """train and test must exist; the default validation name may be absent (then a part of train is held out),
    a validation file the user named must exist (a typo must not silently become a held-out split)."""
    paths: dict[str, Optional[Path]] = {"train": _required(train_file, "train_file", data_dir), "validation": None}
    if val_file:
        paths["validation"] = resolve_data_file(val_file, data_dir)
        if paths["validation"] is None and val_file != DEFAULT_VAL_FILE:
            _required(val_file, "val_file", data_dir)
    paths["test"] = _required(test_file, "test_file", data_dir)
    return paths


def read_split(path: Path, text_fields: Sequence[str], label_field: Optional[str], text_separator: str,
               label_map: Optional[dict[str, Any]], max_length: int) -> SplitData:
    """Records of ``path`` (``label_field=None``: unlabelled, for prediction); texts cut to the characters the
    model can read (``fenlei.text_limits``: the predictor cuts the same way)."""
    records = read_records(path, list(text_fields), label_field, text_separator,
                           label_required=label_field is not None)
    mapping = {str(k): str(v) for k, v in (label_map or {}).items()}
    budget = char_budget(max_length)
    return SplitData(path, [cut_text(r.text, budget)[0] for r in records],
                     [mapping.get(str(r.label), str(r.label)) for r in records], [r.line for r in records])


def _layers(layer: Optional[Union[int, float]], layers: Optional[Sequence[Union[int, float]]]) -> list[Union[int, float]]:
    if layer is not None and layers:
        raise OptionError("--layer and --layers: give one (--layers 0.25 0.5 -1 sweeps several)")
    chosen = list(layers) if layers else [DEFAULT_LAYER if layer is None else layer]
    for value in chosen:
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise OptionError(f"--layers: a fractional layer must be in (0, 1], got {value}")
    return chosen


def _check_options(text_fields: Sequence[str], head: Sequence[str], val_fraction: float, threshold: Optional[float],
                   target_precision: Optional[float], batch_size: int, max_length: int) -> None:
    if not text_fields or not head:
        raise OptionError("--text_fields and --head need at least one value each")
    if not 0.0 <= val_fraction < 1.0:
        raise OptionError(f"--val_fraction must be in [0, 1), got {val_fraction}")
    if threshold is not None and target_precision is not None:
        raise OptionError("--threshold and --target_precision: give one")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise OptionError(f"--threshold must be in [0, 1], got {threshold}")
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise OptionError(f"--target_precision must be in (0, 1], got {target_precision}")
    if batch_size < 1 or max_length < 1:
        raise OptionError("--batch_size and --max_length must be >= 1")


def _check_run_dir(run_dir: Optional[str]) -> None:
    """A probe gets a directory of its own: moving a training run's labels.json and test/ aside would break it."""
    if not run_dir:
        return
    from fenlei.training.run_dir import RunDir, RunError

    if RunDir(Path(run_dir)).looks_like_run():
        raise RunError(f"--run_dir {run_dir}: holds a training run (config.yaml and checkpoints); give the probe a "
                       "directory of its own")


def _say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _extraction_line(split: str, meta: dict[str, Any]) -> str:
    n, layers = meta["num_examples"], len(meta["layer_indices"])
    if meta["from_cache"]:
        return f"probe: {split}: {n} texts, {layers} layer(s) from the feature cache"
    return (f"probe: {split}: {n} texts, {len(meta['layers_extracted'])} layer(s) from one pass in "
            f"{meta['extract_seconds']:.1f} s ({meta['examples_per_s']:.1f} texts/s)")


def probe(*, model: str, data_dir: Optional[str] = None, train_file: str = "train",
          val_file: Optional[str] = DEFAULT_VAL_FILE, test_file: str = "test", val_fraction: float = 0.1,
          seed: int = 0, text_fields: Sequence[str] = ("text",), text_separator: str = " ",
          label_field: str = "label", label_map: Optional[dict[str, Any]] = None,
          layer: Optional[Union[int, float]] = None, layers: Optional[list[Union[int, float]]] = None,
          pooling: Literal["mean", "last", "first"] = "mean", max_length: int = 128, batch_size: int = 16,
          head: Sequence[Literal["logreg", "mlp"]] = ("logreg",), class_weight: Literal["none", "balanced"] = "none",
          C: float = 1.0, mlp_hidden: int = 256, mlp_epochs: int = 100, temperature: bool = True,
          threshold: Optional[float] = None, target_precision: Optional[float] = None,
          cache_dir: Optional[str] = None, num_threads: Optional[int] = None, device: str = "auto",
          run_dir: Optional[str] = None, out: Optional[str] = None, quiet: bool = False) -> dict[str, Any]:
    """Linear probe (or one-layer MLP) on a frozen LM's hidden states; prints (and writes) the JSON report.

    Args:
        model: HF id or folder, a .gguf file, or packaged:gemma3-270m etc.
        data_dir: folder with train/validation/test files (like ../shared/data/NAME)
        train_file: train file name or path
        val_file: validation file name or path; the default name may be absent (then --val_fraction of train is
            held out), a name you give must exist; '' or null: no validation file
        test_file: test file name or path
        val_fraction: share of every train class held out for validation when there is no validation file (0:
            none, then only one layer and head can be given and nothing is calibrated)
        seed: seed of the held-out validation split
        text_fields: fields joined into the text
        text_separator: separator between the text fields
        label_field: field holding the label
        label_map: JSON object remapping raw labels, e.g. '{"0": "high", "1": "high", "2": "low"}'
        layer: one layer: hidden_states index (int; 0 = embeddings, -1 = last block) or depth fraction (a number
            with a dot, like 0.5 or 1.0); 0.5 when neither --layer nor --layers is given
        layers: several layers from one forward pass, e.g. 0.25 0.5 0.75 -1: a head per layer, the sweep table,
            and the best by validation macro-F1 saved
        pooling: how token states become one vector
        max_length: longest input in tokens
        batch_size: texts per extraction batch
        head: heads fitted on the features (each layer gets each head)
        class_weight: class weighting of the heads
        C: inverse L2 strength of the logistic regression
        mlp_hidden: hidden units of the MLP head
        mlp_epochs: training epochs of the MLP head
        temperature: fit a temperature on validation (calibrated confidences; the argmax is unchanged)
        threshold: abstention threshold on the calibrated confidence (below it: label "uncertain"); default none
        target_precision: choose the threshold on validation for this precision instead
        cache_dir: feature cache (default: $FENLEI_CACHE/probe_features)
        num_threads: torch threads for extraction
        device: extraction device: auto (GPU if torch sees one), cpu, cuda, cuda:1
        run_dir: save the probe here (head, settings, labels, calibration, report; used by `fenlei predict
            --probe` and `fenlei infer --probe`); an earlier probe there moves to previous/<time>/
        out: write the JSON report here too
        quiet: no progress bar and no messages on stderr (the JSON report is still printed)
    """
    check_device(device)
    chosen_layers = _layers(layer, layers)
    _check_options(text_fields, head, val_fraction, threshold, target_precision, batch_size, max_length)
    _check_run_dir(run_dir)
    paths = _data_paths(train_file, val_file, test_file, data_dir)
    splits = {name: read_split(path, text_fields, label_field, text_separator, label_map, max_length)
              for name, path in paths.items() if path is not None}
    label_names = sorted(set(splits["train"].labels), key=label_sort_key)
    if len(label_names) < 2:
        raise DataError(f"{paths['train']}: the labels of field {label_field!r} take one value; a probe needs two or more")
    held_out = _held_out(splits, val_fraction, seed)
    _check_validation_labels(splits.get("validation"), label_names)
    candidates = len(chosen_layers) * len(head)
    if candidates > 1 and "validation" not in splits and held_out is None:
        raise OptionError(f"choosing among {candidates} layer/head candidates needs validation data: a validation "
                          "file or --val_fraction > 0")
    lock = None
    if run_dir:
        from fenlei.training.run_dir import RunDir

        lock = RunDir(Path(run_dir)).lock("probe")  # only now: bad options or data leave no directory behind
    try:
        return _run(_options(locals()), splits, held_out, label_names, chosen_layers)
    finally:
        if lock is not None:
            lock.release()


def _options(values: dict[str, Any]) -> dict[str, Any]:
    """The options of one ``probe`` call, for the report and the manifest."""
    names = ("model", "pooling", "max_length", "batch_size", "head", "class_weight", "C", "mlp_hidden",
             "mlp_epochs", "temperature", "threshold", "target_precision", "cache_dir", "num_threads", "device",
             "run_dir", "out", "quiet", "text_fields", "text_separator", "label_field", "label_map", "val_fraction",
             "seed")
    return {name: values[name] for name in names}


def _held_out(splits: dict[str, SplitData], val_fraction: float, seed: int) -> Optional[tuple[list[int], list[int]]]:
    """``(train rows, validation rows)`` of the train file when validation is held out of it, else None."""
    if "validation" in splits or val_fraction == 0.0:
        return None
    return stratified_split(splits["train"].labels, val_fraction, seed)


def _check_validation_labels(validation: Optional[SplitData], label_names: list[str]) -> None:
    """A validation label that train lacks cannot be predicted and would skew the selection: refused, as by the
    DataModules (a test label unseen in train is kept and scored as wrong)."""
    if validation is None:
        return
    known = set(label_names)
    for label, line in zip(validation.labels, validation.lines, strict=True):
        if label not in known:
            raise DataError(f"{validation.path}:{line}: validation label {label!r} does not occur in train")


def _run(options: dict[str, Any], splits: dict[str, SplitData], held_out: Optional[tuple[list[int], list[int]]],
         label_names: list[str], chosen_layers: list[Union[int, float]]) -> dict[str, Any]:
    from fenlei.probe import fitting
    from fenlei.probe.features import FeatureExtractor, layer_name

    quiet = options["quiet"]
    extractor = FeatureExtractor(options["model"], options["pooling"], options["max_length"], options["text_fields"],
                                 options["text_separator"], options["cache_dir"], options["batch_size"],
                                 options["num_threads"], options["device"], progress=not quiet)
    features, extraction = {}, {}
    for split, data in splits.items():
        features[split], extraction[split] = extractor.features(data.path, data.texts, chosen_layers, desc=split)
        _say(quiet, _extraction_line(split, extraction[split]))
    index = {label: i for i, label in enumerate(label_names)}
    ids = {split: np.array([index.get(v, -1) for v in data.labels], dtype=np.int64) for split, data in splits.items()}
    train = fitting.Split(features["train"], ids["train"], splits["train"].labels)
    validation = None
    if "validation" in splits:
        validation = fitting.Split(features["validation"], ids["validation"], splits["validation"].labels)
    elif held_out is not None:
        keep, val_rows = (np.array(rows, dtype=np.int64) for rows in held_out)
        validation = fitting.Split({k: v[val_rows] for k, v in train.features.items()}, train.y[val_rows],
                                   [train.labels[i] for i in val_rows])
        train = fitting.Split({k: v[keep] for k, v in train.features.items()}, train.y[keep],
                              [train.labels[i] for i in keep])
    test = fitting.Split(features["test"], ids["test"], splits["test"].labels)
    layer_indices = extraction["train"]["layer_indices"]
    candidates = fitting.fit_candidates(chosen_layers, layer_indices, options["head"], train, validation, test,
                                        len(label_names), options["class_weight"], options["C"],
                                        options["mlp_hidden"], options["mlp_epochs"])
    selected = fitting.select(candidates)
    calibration = fitting.calibration(selected, validation, options["temperature"], options["threshold"],
                                      options["target_precision"])
    rows = fitting.sweep_rows(candidates, selected)
    table = fitting.sweep_table(rows)
    if not quiet:
        print(table, file=sys.stderr, end="", flush=True)
        by = f"validation macro-F1 {100 * selected.validation['f1_macro']:.2f}, " if selected.validation else ""
        _say(quiet, f"probe: selected layer {layer_name(selected.layer)} (hidden_states {selected.layer_index}), "
                    f"{selected.kind}: {by}test macro-F1 {100 * selected.test['f1_macro']:.2f}")
    validation_info = ({"source": "file", "path": str(splits["validation"].path)} if "validation" in splits else
                       {"source": "held out of train", "fraction": options["val_fraction"], "seed": options["seed"]}
                       if held_out is not None else {"source": None})
    validation_info["num_examples"] = int(len(validation.y)) if validation is not None else 0
    selected_name = layer_name(selected.layer)
    for meta in extraction.values():  # the selected layer's entry, as single-layer reports have always had
        meta["layer_index"], meta["cache_dir"] = meta["layer_indices"][selected_name], meta["cache_dirs"][selected_name]
    by_layer: dict[str, Any] = {}
    for c in candidates:
        entry = by_layer.setdefault(layer_name(c.layer), {"layer_index": c.layer_index, "heads": {}})
        entry["heads"][c.kind] = {**c.test, "validation": c.validation}
    report: dict[str, Any] = {
        "model": options["model"], "layer": selected.layer, "layers": chosen_layers, "pooling": options["pooling"],
        "max_length": options["max_length"], "label_names": label_names,
        "unseen_test_labels": sorted(set(test.labels) - set(label_names), key=label_sort_key),
        "validation": validation_info, "extraction": extraction,
        "heads": by_layer[selected_name]["heads"], "by_layer": by_layer, "sweep": rows,
        "selected": {"layer": selected.layer, "layer_index": selected.layer_index, "head": selected.kind,
                     "by": "validation macro-F1, then accuracy" if validation is not None else "the only candidate",
                     "validation": selected.validation, "test": selected.test},
        "calibration": calibration, "run_dir": options["run_dir"],
    }
    if options["run_dir"]:
        _save(options, report, table, selected, calibration, label_names, splits, test, extraction)
        _say(quiet, f"probe: saved to {options['run_dir']} (fenlei predict --probe {options['run_dir']}; fenlei infer "
                    f"--probe {options['run_dir']} --input FILE --output FILE)")
    write_report(report, options["out"])
    return report


def _save(options: dict[str, Any], report: dict[str, Any], table: str, selected: Any, calibration: dict[str, Any],
          label_names: list[str], splits: dict[str, SplitData], test: Any, extraction: dict[str, Any]) -> None:
    from fenlei import __version__
    from fenlei.io import file_sha256
    from fenlei.probe.fitting import predictions_on_test
    from fenlei.probe.identity import model_identity
    from fenlei.probe.store import PROBE_OUTPUTS, write_probe
    from fenlei.training.run_dir import RunDir

    folder = Path(options["run_dir"])
    meta = extraction["train"]
    manifest = {
        "fenlei_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model_identity(options["model"]),
        "features": {"layer": selected.layer, "layer_index": selected.layer_index, "num_layers": meta["num_layers"],
                     "pooling": options["pooling"], "max_length": options["max_length"],
                     "text_fields": list(options["text_fields"]), "text_separator": options["text_separator"],
                     "dim": selected.fitted.head.dim, "batch_size": options["batch_size"]},
        "head": {"kind": selected.kind, "num_classes": len(label_names), "class_weight": options["class_weight"],
                 "C": options["C"], "mlp_hidden": options["mlp_hidden"], "mlp_epochs": options["mlp_epochs"]},
        "labels": {"label_field": options["label_field"], "label_map": options["label_map"]},
        "data": {split: {"path": str(data.path.resolve()), "sha256": file_sha256(data.path)}
                 for split, data in splits.items()},
        "validation": report["validation"],
        "selection": {"by": report["selected"]["by"], "candidates": len(report["sweep"])},
        "metrics": {"validation": selected.validation, "test": selected.test},
    }
    RunDir(folder).archive_previous(PROBE_OUTPUTS)
    write_probe(folder, manifest, selected.fitted.head, label_names, calibration, report, table,
                predictions_on_test(selected, test, label_names, calibration))


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
