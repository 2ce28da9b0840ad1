"""The run directory: the one module that knows its file names, finds its checkpoints and loads a finished run.

A run directory is ``trainer.default_root_dir`` (default ``runs/<stem of the first --config file>``). Its files:

=============================  ===========================================================================
``config.yaml``                resolved config of the latest command (``class_path`` + ``init_args`` of the
                               model and the DataModule: what :func:`load_run` rebuilds)
``labels.json``                label vocabulary, class-id order (written at fit start)
``binning.json``               numeric targets only: the fitted bins, the train report, the outlier filter
``checkpoints/best-*.ckpt``    weights of the best epoch on ``val/f1_macro`` (``best-epoch03.ckpt``)
``checkpoints/last.ckpt``      full state (optimizer, loops, RNG) after the latest epoch: ``fit --ckpt_path
                               last`` resumes
``metrics.csv``                every value logged during fit (CSVLogger). A resume first drops the rows of the
                               interrupted attempt that it logs again (``metrics_csv.MetricsRowsCallback``), then
                               appends: no step twice, none lost
``hparams.yaml``               the model's and DataModule's hyperparameters (CSVLogger)
``run_summary.json``           written last, atomically: its presence means the fit finished (epochs, seconds,
                               throughput, best checkpoint and score, last metrics, machine)
``wandb/``                     the W&B run (offline unless ``--wandb.mode online``)
``wandb_run_id.txt``           the fit's W&B run id: ``fit --ckpt_path last`` continues that W&B run (``resume=
                               "allow"``) instead of starting a second one
``run.lock``                   ``flock`` ed by the command writing into the directory (fit, validate, test,
                               predict) and holding ``<pid> <command>``: a second command exits 2 naming that pid.
                               The file stays after the command; without a live holder it blocks nothing
``test/``                      after ``test``: ``per_class.csv``, ``per_class.md``, ``confusion_matrix.png``,
                               ``metrics.json`` (+ ``decoding_metrics.json`` for generative classifiers;
                               ``metrics.csv``, ``config.yaml``, ``hparams.yaml`` of the test command), and for
                               classifiers ``predictions.jsonl``: one line per test row (row, line, text, gold,
                               predicted label, confidence, logits), what ``fenlei report`` reads
``validate/``                  after ``validate``: that command's ``metrics.csv``, and for classifiers
                               ``predictions.jsonl`` of the validation rows (the report's temperature is fitted on it)
``predict/predictions.jsonl``  after ``predict``: one row per input row, the record of ``fenlei.predictions``
``adapter/``                   generative classifiers: the best checkpoint's adapter (``save_pretrained``)
``report.html``                after ``fenlei report``: the run's static HTML report
``previous/<time>/``           an earlier fit's files, moved aside by the next fit (nothing is overwritten)
=============================  ===========================================================================

Runs written before the one-namespace move (``tests/fixtures/layout_v0``) have the same layout and load as they
are. Importing this module costs nothing: torch, yaml and the run's classes are imported only by :func:`load_run`.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from fenlei.errors import FenleiError
from fenlei.io import atomic_write_json, atomic_write_text
from fenlei.training.run_lock import RunLock, acquire

DEFAULT_RUNS_ROOT = "runs"

CONFIG_FILE = "config.yaml"
LABELS_FILE = "labels.json"
BINNING_FILE = "binning.json"
CHECKPOINTS_DIR = "checkpoints"
# ModelCheckpoint filename templates (no ".ckpt"): the best epoch, and the every-epoch full state for resume.
BEST_CHECKPOINT_TEMPLATE = "best-epoch{epoch:02d}"
BEST_CHECKPOINT_GLOB = "best*.ckpt"
LAST_CHECKPOINT_NAME = "last"
LAST_CHECKPOINT_FILE = f"{LAST_CHECKPOINT_NAME}.ckpt"
METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"
SUMMARY_FILE = "run_summary.json"
WANDB_DIR = "wandb"
WANDB_RUN_ID_FILE = "wandb_run_id.txt"
LOCK_FILE = "run.lock"
TEST_DIR = "test"
VALIDATE_DIR = "validate"
PREDICT_DIR = "predict"
PREDICTIONS_FILE = "predictions.jsonl"
ADAPTER_DIR = "adapter"
PREVIOUS_DIR = "previous"
# Inside test/.
PER_CLASS_CSV = "per_class.csv"
PER_CLASS_MD = "per_class.md"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
TEST_METRICS_FILE = "metrics.json"
DECODING_METRICS_FILE = "decoding_metrics.json"
# Inside test/ and validate/: one line per evaluated row (fenlei.training.reporting.split_prediction_lines).
EVAL_PREDICTIONS_FILE = "predictions.jsonl"
# Written by `fenlei report` (fenlei/ops/report.py) beside the run's files.
REPORT_FILE = "report.html"

# What a new fit moves to previous/<time>/: everything that describes one fit. config.yaml is rewritten by every
# command, wandb/ keeps every run itself, binning.json and adapter/ are rewritten by the next fit, run.lock is held
# by the fit that archives. The W&B run id goes with its fit: the next fit starts a W&B run of its own.
FIT_OUTPUTS = (CHECKPOINTS_DIR, METRICS_FILE, HPARAMS_FILE, SUMMARY_FILE, LABELS_FILE, TEST_DIR, VALIDATE_DIR,
               PREDICT_DIR, WANDB_RUN_ID_FILE, REPORT_FILE)


class RunError(FenleiError, RuntimeError):
    """A problem with the run directory or the command (as opposed to a bug): reported in one line, exit 2."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (nothing is read or created until asked)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def labels(self) -> Path:
        return self.path / LABELS_FILE

    @property
    def binning(self) -> Path:
        return self.path / BINNING_FILE

    def write_run_files(self, files: Mapping[str, str]) -> None:
        """Write what a DataModule contributes (``run_files()``: text by kind, ``labels`` and ``binning``)."""
        paths = {"labels": self.labels, "binning": self.binning}
        for kind, text in files.items():
            if kind not in paths:
                raise ValueError(f"unknown run file kind {kind!r}; known: {sorted(paths)}")
            atomic_write_text(paths[kind], text)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT_FILE

    @property
    def metrics_csv(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def test(self) -> Path:
        return self.path / TEST_DIR

    @property
    def test_metrics(self) -> Path:
        return self.test / TEST_METRICS_FILE

    @property
    def test_predictions(self) -> Path:
        return self.test / EVAL_PREDICTIONS_FILE

    @property
    def validate(self) -> Path:
        return self.path / VALIDATE_DIR

    @property
    def validate_predictions(self) -> Path:
        return self.validate / EVAL_PREDICTIONS_FILE

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def predictions(self) -> Path:
        return self.path / PREDICT_DIR / PREDICTIONS_FILE

    @property
    def adapter(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def previous(self) -> Path:
        return self.path / PREVIOUS_DIR

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    def lock(self, command: str) -> RunLock:
        """Take the directory's exclusive lock for ``command`` (creating the directory), or raise a one-line
        ``RunLockedError`` naming the live holder's pid. Released by ``RunLock.release`` or the process's end."""
        return acquire(self.lock_file, command, directory_label=str(self.path))

    @property
    def wandb_run_id_file(self) -> Path:
        return self.path / WANDB_RUN_ID_FILE

    def read_wandb_run_id(self) -> Optional[str]:
        """The W&B run id of the fit in this directory: ``wandb_run_id.txt``, else (a run from before that file)
        the id in the name of the newest ``wandb/*run-<time>-<id>`` folder; None when there is none."""
        if self.wandb_run_id_file.is_file():
            run_id = self.wandb_run_id_file.read_text(encoding="utf-8").strip()
            if run_id:
                return run_id
        folders = sorted((self.path / WANDB_DIR).glob("*run-*-*"), key=lambda p: p.name.split("run-", 1)[1])
        folders = [p for p in folders if p.is_dir() and not p.is_symlink()]
        return folders[-1].name.rsplit("-", 1)[1] if folders else None

    def write_wandb_run_id(self, run_id: str) -> Path:
        return atomic_write_text(self.wandb_run_id_file, run_id + "\n")

    def looks_like_run(self) -> bool:
        """A config plus a finished fit or at least a checkpoints folder (how ``compare`` tells runs from bundles)."""
        return self.config.is_file() and (self.summary.is_file() or self.checkpoints.is_dir())

    def is_finished(self, with_test: bool = False) -> bool:
        """The fit finished (``run_summary.json`` exists) and, with ``with_test``, so did ``test``."""
        finished = self.summary.is_file()
        return finished and (not with_test or self.test_metrics.is_file())

    def read_summary(self) -> Optional[dict[str, Any]]:
        """``run_summary.json``, or None before the fit finished."""
        return json.loads(self.summary.read_text()) if self.summary.is_file() else None

    def write_summary(self, summary: Mapping[str, Any]) -> Path:
        """Atomically, as the fit's last write: a reader sees the whole summary or none."""
        return atomic_write_json(self.summary, dict(summary))

    def clear_summary(self) -> None:
        """A resumed or repeated fit is not finished until it writes its summary again."""
        self.summary.unlink(missing_ok=True)

    def best_checkpoint(self) -> Path:
        """The best checkpoint of the last finished fit (``run_summary.json`` names it), looked up by its file name
        in this directory's ``checkpoints/``, else the newest ``checkpoints/best*.ckpt``. The summary's absolute
        path is not followed: in a copied or moved run directory it names the original's file, which may still
        exist and hold other weights."""
        summary = self.read_summary() or {}
        best = summary.get("best_checkpoint")
        if best and (self.checkpoints / Path(best).name).is_file():
            return self.checkpoints / Path(best).name
        candidates = sorted(self.checkpoints.glob(BEST_CHECKPOINT_GLOB), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise RunError(f"--ckpt_path best: no finished fit with a best checkpoint in {self.path}")
        return candidates[-1]

    def archive_previous(self, outputs: Sequence[str] = FIT_OUTPUTS) -> Optional[Path]:
        """Move an earlier fit's files (``outputs``: a probe directory names its own) to ``previous/<time>/`` (a
        new fit starts clean, nothing of the old one is lost). Returns the archive folder, or None when there was
        nothing to move."""
        present = [self.path / name for name in outputs if (self.path / name).exists()]
        if not present:
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        archive = self.previous / stamp
        suffix = 1
        while archive.exists():  # two fits within one second
            archive = self.previous / f"{stamp}-{suffix}"
            suffix += 1
        archive.mkdir(parents=True)
        for path in present:
            path.rename(archive / path.name)
        print(f"fenlei: moved the previous run's files to {archive}", file=sys.stderr)
        return archive


def default_run_dir(config_paths: Optional[Sequence[Any]]) -> Path:
    """``runs/<stem of the first --config>``, or ``runs/default`` when no config file was given."""
    if config_paths:
        first = config_paths[0]
        name = Path(str(getattr(first, "relative", first))).stem
        return Path(DEFAULT_RUNS_ROOT) / name
    return Path(DEFAULT_RUNS_ROOT) / "default"


def sweep_agent_run_dir(run_dir: Optional[str | Path], environ: Mapping[str, str]) -> Optional[Path]:
    """Under ``wandb agent`` (which sets ``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID`` for every trial), each trial's own
    run directory: ``runs/sweeps/<sweep id>/<run id>`` instead of the config's default, or ``<given dir>/<run id>``
    for a ``trainer.default_root_dir`` the config or command line sets. Without it the trials of one agent would
    share a directory and each fit would move the previous trial's files to ``previous/``, and two agents on one
    host would archive each other's live files. None outside an agent."""
    sweep_id, run_id = environ.get("WANDB_SWEEP_ID"), environ.get("WANDB_RUN_ID")
    if not sweep_id or not run_id:
        return None
    if run_dir:
        return Path(run_dir) / run_id
    return Path(DEFAULT_RUNS_ROOT) / "sweeps" / sweep_id / run_id


def archive_previous_run(run_dir: Path) -> Optional[Path]:
    return RunDir(run_dir).archive_previous()


def best_checkpoint(run_dir: Path) -> Path:
    """The best checkpoint of the last finished fit in ``run_dir``, for ``--ckpt_path best``."""
    return RunDir(run_dir).best_checkpoint()


def resolve_checkpoint(ckpt_path: str, run_dir: Optional[str | Path] = None) -> tuple[Path, Optional[Path]]:
    """``(checkpoint, run directory)`` from a .ckpt file, a run directory (its best checkpoint), or ``best`` with
    ``run_dir``. A checkpoint alone finds its run directory when it lies in one (``<run>/checkpoints/x.ckpt``)."""
    if ckpt_path == "best":
        if not run_dir:
            raise RunError("--ckpt_path best needs --run_dir (the run directory of the fit)")
        return best_checkpoint(Path(run_dir)), Path(run_dir)
    path = Path(ckpt_path)
    if path.is_dir():
        return best_checkpoint(path), path
    if not path.is_file():
        raise RunError(f"--ckpt_path {ckpt_path}: no such checkpoint file or run directory")
    if run_dir:
        return path, Path(run_dir)
    guess = path.parent.parent if path.parent.name == CHECKPOINTS_DIR else path.parent
    return path, guess if RunDir(guess).config.is_file() else None


# ----------------------------------------------------------------------------------------------- loading


def import_class(class_path: str) -> Any:
    module, _, name = class_path.rpartition(".")
    if not module:
        raise RunError(f"class_path {class_path!r}: expected module.ClassName")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise RunError(f"class_path {class_path!r}: cannot import it ({err})") from None


def instantiate(value: Any) -> Any:
    """A config value with every nested ``{class_path, init_args}`` built, as jsonargparse builds it."""
    if isinstance(value, Mapping):
        if "class_path" in value:
            return import_class(str(value["class_path"]))(**instantiate(dict(value.get("init_args") or {})))
        return {key: instantiate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [instantiate(item) for item in value]
    return value


@dataclass
class LoadedRun:
    """A finished run rebuilt for inference: the model (eval mode, CPU) and, on first use, its DataModule."""

    checkpoint: Path
    run_dir: Optional[Path]
    config_path: Path
    config: dict[str, Any]
    model: Any
    data_overrides: dict[str, Any]

    @property
    def model_class_path(self) -> str:
        return str(self.config["model"]["class_path"])

    @property
    def data_class_path(self) -> str:
        return str(self.config["data"]["class_path"])

    @property
    def data_init_args(self) -> dict[str, Any]:
        """``data.init_args`` of the config with the overrides applied (e.g. another ``data_dir``). A config
        written by hand without a tokenizer gets the model's, as the CLI does (saved runs record it)."""
        init_args = {**dict(self.config["data"].get("init_args") or {}), **self.data_overrides}
        if not init_args.get("tokenizer"):
            pretrained = (self.config["model"].get("init_args") or {}).get("pretrained")
            if pretrained:
                init_args["tokenizer"] = pretrained
        return init_args

    @cached_property
    def datamodule(self) -> Any:
        """The run's DataModule (``data.class_path``): tokenizer, max_length, text fields, markers as in training.
        Built lazily: its constructor checks that the data files exist, which scoring texts does not need."""
        return import_class(self.data_class_path)(**instantiate(self.data_init_args))

    @property
    def label_names(self) -> list[str]:
        """From the checkpoint's hyperparameters, else from the data."""
        hparams = getattr(self.model, "hparams", {})
        saved = hparams.get("label_names")
        if saved:
            return [str(name) for name in saved]
        return [str(name) for name in self.datamodule.label_names]

    @property
    def text_fields(self) -> list[str]:
        return list(self.data_init_args.get("text_fields") or ["text"])

    @property
    def text_separator(self) -> str:
        return str(self.data_init_args.get("text_separator", " "))

    def text_of(self, row: Mapping[str, Any]) -> str:
        """One input row's text as the run's DataModule joins it (``text_fields`` with ``text_separator``)."""
        return self.text_separator.join(str(row.get(f) or "") for f in self.text_fields)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids (truncated, unpadded) of ``texts`` as the model saw them in training (feature markers too)."""
        dm = self.datamodule
        model_text = getattr(dm, "model_text", None)
        if model_text is None:
            raise RunError(f"{self.data_class_path}: its DataModule cannot encode plain texts (no model_text)")
        return dm.tokenizer([model_text(t) for t in texts], truncation=True, max_length=dm.max_length)["input_ids"]

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> Any:
        """``(N, C)`` class probabilities from the module's own ``predict_step`` (what ``fenlei predict`` writes)."""
        import numpy as np
        import torch

        from datamodules.text_classification import PadCollator

        collate = PadCollator(self.datamodule.tokenizer.pad_token_id or 0)
        ids = self.encode(texts)
        out = []
        with torch.inference_mode():
            for start in range(0, len(ids), batch_size):
                items = [{"input_ids": row, "index": start + i} for i, row in enumerate(ids[start:start + batch_size])]
                out.append(self.model.predict_step(collate(items), start // batch_size)["probs"].float().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.label_names)), dtype=np.float32)


def read_config(path: Path) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    for key in ("model", "data"):
        if not isinstance(config.get(key), Mapping) or "class_path" not in config[key]:
            raise RunError(f"{path}: no {key}.class_path (not the config.yaml of a fenlei run)")
    return config


def load_run(ckpt_path: str | Path, run_dir: Optional[str | Path] = None, config_path: Optional[str | Path] = None,
             data_overrides: Optional[Mapping[str, Any]] = None) -> LoadedRun:
    """Rebuild a run for inference from what its ``config.yaml`` records: the model class (``model.class_path``,
    weights and hyperparameters from the checkpoint) and the DataModule (``data.class_path`` and ``init_args``).

    ``ckpt_path``: a checkpoint, a run directory (its best checkpoint) or ``best`` with ``run_dir``;
    ``config_path``: another config than the run directory's; ``data_overrides``: DataModule arguments to replace
    (``data_dir``, ``max_length``)."""
    checkpoint, found_dir = resolve_checkpoint(str(ckpt_path), run_dir)
    config_file = Path(config_path) if config_path else (RunDir(found_dir).config if found_dir else None)
    if config_file is None or not config_file.is_file():
        raise RunError(f"{checkpoint}: cannot find the run's {CONFIG_FILE} (pass the run directory or its config)")
    config = read_config(config_file)
    from fenlei.training.checkpoints import WEIGHTS_ONLY, refusing_pickled_code

    with refusing_pickled_code(checkpoint):
        model = import_class(str(config["model"]["class_path"])).load_from_checkpoint(
            str(checkpoint), map_location="cpu", weights_only=WEIGHTS_ONLY)
    model.eval()
    return LoadedRun(checkpoint=checkpoint, run_dir=found_dir, config_path=config_file, config=config, model=model,
                     data_overrides={k: v for k, v in (data_overrides or {}).items() if v is not None})
