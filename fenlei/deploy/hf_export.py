"""``fenlei export --format hf``: a fenlei run as a Hugging Face model folder, checked by loading it back.

    fenlei export --format hf --ckpt_path runs/NAME --out hf/NAME [--push_to_hub USER/NAME [--dry_run]]

The folder loads with ``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` and
``pipeline("text-classification", model=folder, trust_remote_code=True)``, labels included (``config.json``:
``id2label``/``label2id`` in the model's output order). What it holds:

- an encoder classifier (``EncoderClassifier``: backbone + cls/mean pooling + linear/MLP head): ``config.json``
  (the backbone's own config under ``backbone``, fenlei's pooling and head, ``auto_map``), ``modeling_fenlei.py``
  (:mod:`fenlei.deploy.hf_modeling`, standalone: torch and transformers only) and ``model.safetensors`` with the
  module's own weights (``backbone.*``, ``head.*``). No stock ``*ForSequenceClassification`` class computes
  fenlei's logits: BERT's applies its pooler (dense + tanh) to the first token, which fenlei's cls pooling does not,
  and none has mean pooling or fenlei's MLP head; so the folder carries the code that does.
- a decoder sequence classifier (``DecoderSequenceClassifier``: LoRA + ``score``): the LoRA weights merged, saved as
  the architecture's own ``*ForSequenceClassification`` (which is what the module is), no custom code; the
  tokenizer pads on the right, as fenlei does.
- the training tokenizer (``model_max_length`` = the run's ``max_length``, so ``truncation=True`` cuts where
  training did), ``README.md`` (model card: data, config, test metrics, the check below) and
  ``fenlei_export.json`` (the source checkpoint and the check).

The check, before the folder is renamed into place: the folder is loaded back through the Auto classes (the custom
code included) and its logits on the run's held-out texts, tokenized by the folder's tokenizer, are compared with
the fenlei module's own; differing token ids or a logit apart by more than :data:`MAX_LOGIT_DIFF` stop the export.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fenlei.deploy import staging
from fenlei.deploy.errors import ExportError
from fenlei.io import atomic_write_json, atomic_write_text, file_sha256

MODELING_FILE = "modeling_fenlei.py"
CONFIG_CLASS = "FenleiClassifierConfig"
MODEL_CLASS = "FenleiEncoderClassifier"
MAX_LOGIT_DIFF = 1e-4
CHECK_TEXTS = 256  # held-out texts the check compares (the first ones of the validation split)
# Written by the tokenizer from the loading environment, not properties of the tokenizer.
TOKENIZER_ENV_KEYS = ("is_local", "local_files_only")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class HfSource:
    """A fenlei run reduced to what the HF folder needs."""

    kind: str  # "encoder" (custom code) or "decoder" (the architecture's own class)
    run: Any  # fenlei.training.run_dir.LoadedRun
    model: Any
    datamodule: Any
    label_names: list[str]
    max_length: int


def _log(quiet: bool) -> Any:
    def log(message: str) -> None:
        if not quiet:
            print(f"export: {message}", file=sys.stderr)

    return log


# ----------------------------------------------------------------------------------------------- the source


def load_hf_export_source(options: Any) -> HfSource:
    """The run ``--ckpt_path`` names, if its module maps onto an HF model exactly; else one line saying why not."""
    source = options.source
    if source.hf_model:
        raise ExportError("--format hf exports a fenlei run (--ckpt_path); --hf_model is already a Hugging Face folder")
    if not source.ckpt_path:
        raise ExportError("--format hf: give --ckpt_path (a fenlei checkpoint or run directory)")
    from fenlei.training.run_dir import load_run

    run = load_run(source.ckpt_path, source.run_dir, source.run_config,
                   {"data_dir": source.data_dir, "max_length": source.max_length or None})
    model, dm = run.model, run.datamodule
    kind = module_kind(model, run.model_class_path)
    if getattr(dm, "markers", None) is not None:
        raise ExportError(f"{run.config_path}: data.init_args.markers: the run prefixes feature markers to every "
                          "text, which a text-classification pipeline does not do; --format hf cannot reproduce it "
                          "(export an ONNX bundle, or train without markers)")
    saved = model.hparams.get("label_names")
    if saved is not None and list(saved) != list(dm.label_names):
        raise ExportError(f"{run.checkpoint}: the checkpoint's label_names differ from the data's labels in "
                          f"{run.config_path}")
    labels = [str(name) for name in (saved or dm.label_names)]
    return HfSource(kind=kind, run=run, model=model, datamodule=dm, label_names=labels, max_length=int(dm.max_length))


def module_kind(model: Any, class_path: str) -> str:
    """``encoder`` or ``decoder`` when the module's logits are exactly what the HF folder computes; else refused."""
    from lightning_modules.decoder_seqcls import DecoderSequenceClassifier
    from lightning_modules.encoder_base import EncoderModule, build_head
    from lightning_modules.encoder_classifier import ClassificationModule

    where = f"--format hf: {class_path}"
    if isinstance(model, DecoderSequenceClassifier):
        if type(model).forward is not DecoderSequenceClassifier.forward:
            raise ExportError(f"{where}: overrides forward, which the architecture's own class would not reproduce")
        return "decoder"
    if not (isinstance(model, EncoderModule) and isinstance(model, ClassificationModule)):
        raise ExportError(f"{where}: not a text classifier over an encoder (EncoderClassifier) or a decoder sequence "
                          "classifier (DecoderSequenceClassifier); its outputs are not class logits an HF "
                          "text-classification model returns (export an ONNX bundle instead)")
    for method in ("forward", "encode"):
        if getattr(type(model), method) is not getattr(EncoderModule, method):
            raise ExportError(f"{where}: overrides {method}, which modeling_fenlei.py does not reproduce")
    hp = model.hparams
    expected = build_head(model.backbone.config.hidden_size, int(hp.num_classes), hp.head, hp.get("head_hidden_size"),
                          hp.dropout)
    if _structure(model.head) != _structure(expected):
        raise ExportError(f"{where}: its head is not fenlei's {hp.head!r} head (head: linear or mlp), which "
                          "modeling_fenlei.py builds")
    if hp.pooling not in ("cls", "mean"):
        raise ExportError(f"{where}: pooling {hp.pooling!r} is not cls or mean")
    from transformers import CONFIG_MAPPING

    backbone = model.backbone
    model_type = getattr(backbone.config, "model_type", None)
    if model_type not in CONFIG_MAPPING or not type(backbone).__module__.startswith("transformers."):
        raise ExportError(f"{where}: the backbone {type(backbone).__name__} (model_type {model_type!r}) is not an "
                          "architecture of transformers itself, which modeling_fenlei.py builds with AutoModel")
    return "encoder"


def _structure(module: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(type(m).__name__, ()) for m in module.modules()] + [
        (name, tuple(p.shape)) for name, p in module.state_dict().items()]


# ----------------------------------------------------------------------------------------------- the folder


def backbone_config_dict(config: Any) -> dict[str, Any]:
    """The backbone's config as ``AutoConfig.for_model`` takes it back (no labels, paths or versions)."""
    values = config.to_dict()
    for key in ("transformers_version", "_name_or_path", "architectures", "id2label", "label2id", "auto_map"):
        values.pop(key, None)
    return values


def label_maps(labels: list[str]) -> dict[str, Any]:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def write_encoder_model(source: HfSource, tmp: Path) -> None:
    """config.json, model.safetensors and modeling_fenlei.py of an encoder classifier."""
    from fenlei.deploy import hf_modeling

    module, hp = source.model, source.model.hparams
    config = hf_modeling.FenleiClassifierConfig(
        backbone=backbone_config_dict(module.backbone.config), pooling=hp.pooling, head=hp.head,
        head_hidden_size=hp.get("head_hidden_size"), dropout=float(hp.dropout), **label_maps(source.label_names))
    config.auto_map = {"AutoConfig": f"{Path(MODELING_FILE).stem}.{CONFIG_CLASS}",
                       "AutoModelForSequenceClassification": f"{Path(MODELING_FILE).stem}.{MODEL_CLASS}"}
    hf_model = hf_modeling.FenleiEncoderClassifier(config)
    weights = {k: v for k, v in module.state_dict().items() if k.startswith(("backbone.", "head."))}
    try:
        hf_model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ExportError(f"--format hf: the module's weights do not fit modeling_fenlei.py ({first})") from None
    hf_model.eval().save_pretrained(tmp)
    shutil.copyfile(hf_modeling.__file__, tmp / MODELING_FILE)


def write_decoder_model(source: HfSource, tmp: Path) -> dict[str, Any]:
    """The merged decoder sequence classifier, as its architecture's own class (no custom code)."""
    module = source.model
    backbone = module.backbone
    merged = backbone.merge_and_unload() if hasattr(backbone, "merge_and_unload") else backbone
    module.backbone = merged
    for key, value in label_maps(source.label_names).items():
        setattr(merged.config, key, value)
    merged.eval().save_pretrained(tmp)
    return {"architectures": list(getattr(merged.config, "architectures", None) or [type(merged).__name__])}


def write_tokenizer(source: HfSource, tmp: Path) -> None:
    """The training tokenizer, cutting at the run's max_length; decoders pad on the right (as fenlei's batches)."""
    tokenizer = source.datamodule.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError("--format hf: the tokenizer has no fast (tokenizers) version")
    tokenizer.save_pretrained(str(tmp))
    path = tmp / "tokenizer_config.json"
    try:
        tokenizer_config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ExportError(f"{path}: not written as JSON by the tokenizer ({err})") from None
    for key in TOKENIZER_ENV_KEYS:
        tokenizer_config.pop(key, None)
    tokenizer_config["model_max_length"] = source.max_length
    if source.kind == "decoder":
        tokenizer_config["padding_side"] = "right"
        if tokenizer.pad_token_id is None:  # fenlei pads with id 0 then (the model's pad_token_id too)
            tokenizer_config["pad_token"] = tokenizer.convert_ids_to_tokens(0)
    atomic_write_json(path, tokenizer_config)


# ----------------------------------------------------------------------------------------------- the check


def fenlei_logits(source: HfSource, texts: list[str], batch_size: int) -> tuple[Any, list[list[int]]]:
    """The module's own logits on ``texts``, tokenized and padded as fenlei does (``LoadedRun.encode``)."""
    import numpy as np
    import torch

    from datamodules.text_classification import PadCollator

    ids = source.run.encode(texts)
    collate = PadCollator(source.datamodule.tokenizer.pad_token_id or 0)
    out = []
    with torch.inference_mode():
        for start in range(0, len(ids), batch_size):
            batch = collate([{"input_ids": row, "index": i} for i, row in enumerate(ids[start:start + batch_size])])
            out.append(source.model(batch["input_ids"], batch["attention_mask"]).float().numpy())
    return (np.concatenate(out) if out else np.zeros((0, len(source.label_names)), dtype=np.float32)), ids


def folder_logits(folder: Path, kind: str, texts: list[str], batch_size: int) -> tuple[Any, list[list[int]], Any]:
    """Logits of the folder as a user loads it: the Auto classes (the custom code too), its tokenizer, truncation on."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    trust = kind == "encoder"
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), trust_remote_code=trust).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
    except (OSError, ValueError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"--format hf: the folder written does not load with transformers ({first})") from None
    ids = tokenizer(texts, truncation=True)["input_ids"]
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], truncation=True, padding=True, return_tensors="pt")
            out.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.float().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)
    if trust:
        forget_module_copy(type(model), folder)
    return logits, ids, model.config


def forget_module_copy(model_class: type, folder: Path) -> None:
    """transformers copies a folder's custom code into its modules cache, under the folder's name
    (``HF_MODULES_CACHE/transformers_modules/<name>/<hash>/``); the temporary folder's copy is of no use once the folder
    is renamed, so it goes (a user loading the folder gets a copy under the folder's own name)."""
    import inspect

    try:
        copy = Path(inspect.getfile(model_class)).parent.parent
    except (TypeError, OSError):
        return
    # mkdtemp's random suffix (letters, digits, underscores) survives transformers' module-name sanitising.
    suffix = folder.name.rpartition(".tmp-")[2]
    if copy.parent.name == "transformers_modules" and ".tmp-" in folder.name and copy.name.endswith(f"tmp_hyphen_{suffix}"):
        shutil.rmtree(copy, ignore_errors=True)


def check_folder(source: HfSource, folder: Path, texts: list[str], reference: Any, fenlei_ids: list[list[int]],
                 batch_size: int) -> dict[str, Any]:
    """Load the folder back and compare it with the module; raises ExportError on any difference."""
    import numpy as np

    logits, ids, config = folder_logits(folder, source.kind, texts, batch_size)
    labels = [config.id2label[i] for i in range(config.num_labels)]
    if labels != source.label_names:
        raise ExportError(f"{folder / 'config.json'}: id2label {labels} differs from the run's labels "
                          f"{source.label_names}")
    mismatches = sum(a != b for a, b in zip(ids, fenlei_ids, strict=True))
    diff = float(np.abs(logits - reference).max()) if len(texts) else 0.0
    agreement = float((logits.argmax(1) == reference.argmax(1)).mean()) if len(texts) else 1.0
    check = {"texts": len(texts), "batch_size": batch_size, "tokenizer_mismatches": int(mismatches),
             "max_abs_logit_diff": diff, "argmax_agreement": agreement, "max_allowed_diff": MAX_LOGIT_DIFF,
             "loaded_with": "AutoModelForSequenceClassification.from_pretrained("
                            f"folder{', trust_remote_code=True' if source.kind == 'encoder' else ''})"}
    problems = []
    if mismatches:
        problems.append(f"the folder's tokenizer gives other token ids than training's for {mismatches} of "
                        f"{len(texts)} texts")
    if not diff <= MAX_LOGIT_DIFF:
        problems.append(f"logits differ from the fenlei module's by up to {diff:.3g} (> {MAX_LOGIT_DIFF:g})")
    if problems:
        raise ExportError(f"--format hf: the folder loaded back does not reproduce the run: {'; '.join(problems)}")
    return check


# ----------------------------------------------------------------------------------------------- the model card


def split_summary(dm: Any) -> dict[str, Any]:
    """Rows and label counts of each split the run's data has (train, validation, and test if there is one)."""
    splits: dict[str, Any] = {}
    names = ["train", "validation"] + (["test"] if getattr(dm, "test_path", None) is not None else [])
    for name in names:
        records = dm.split_records(name)
        counts = Counter(str(r.label) for r in records)
        splits[name] = {"rows": len(records), "label_counts": dict(sorted(counts.items()))}
    return splits


def config_essentials(config: dict[str, Any]) -> dict[str, Any]:
    """What decides the model in a run's config.yaml (the model's arguments, the data's shape, the training budget)."""
    model = dict(config.get("model") or {})
    data_args = dict((config.get("data") or {}).get("init_args") or {})
    trainer = dict(config.get("trainer") or {})
    keep_data = ("tokenizer", "data_dir", "train_file", "val_file", "test_file", "text_fields", "text_separator",
                 "label_field", "labels", "val_fraction", "max_length", "batch_size", "seed")
    keep_trainer = ("max_epochs", "max_steps", "precision", "accumulate_grad_batches", "gradient_clip_val")
    return {
        "seed_everything": config.get("seed_everything"),
        "model": {"class_path": model.get("class_path"), "init_args": dict(model.get("init_args") or {})},
        "data": {"class_path": (config.get("data") or {}).get("class_path"),
                 "init_args": {k: data_args[k] for k in keep_data if k in data_args}},
        "trainer": {k: trainer[k] for k in keep_trainer if k in trainer},
    }


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def tested_checkpoint(path: Path) -> Optional[str]:
    """The ``ckpt_path`` the run's ``fenlei test`` used (its ``test/config.yaml``), which may be another checkpoint
    than the one exported."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    value = config.get("ckpt_path") if isinstance(config, dict) else None
    return Path(str(value)).name if value else None  # the file's name: the card is published, the path is local


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def model_card(source: HfSource, info: dict[str, Any]) -> str:
    """README.md: front matter for the hub, then what the model is, how to load it, its data, config and metrics."""
    import yaml

    run, dm, hp = source.run, source.datamodule, source.model.hparams
    pretrained = str(hp.get("pretrained") or "")
    front: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-classification",
                             "tags": ["fenlei", "text-classification"] + (["custom_code"] if source.kind == "encoder" else [])}
    if HUB_ID.match(pretrained) and not Path(pretrained).exists():
        front["base_model"] = pretrained
    trust = ", trust_remote_code=True" if source.kind == "encoder" else ""
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", "",
             f"# {info['name']}", "",
             f"A text classifier trained with fenlei (`{run.model_class_path}`) and exported by "
             "`fenlei export --format hf`.", ""]
    if source.kind == "encoder":
        lines += [f"Architecture: the `{info['backbone_model_type']}` encoder `{pretrained}`, **{hp.pooling}** pooling "
                  f"({'first token, no pooler layer' if hp.pooling == 'cls' else 'mean over the non-padding tokens'}), "
                  f"a **{hp.head}** head ({'dropout, linear' if hp.head == 'linear' else 'linear, GELU, dropout, linear'}), "
                  f"{len(source.label_names)} labels. The folder carries its model code (`{MODELING_FILE}`): no stock "
                  "`*ForSequenceClassification` class computes these logits, so loading needs `trust_remote_code=True`.", ""]
    else:
        lines += [f"Architecture: `{', '.join(info['architectures'])}` over `{pretrained}` (LoRA merged into the "
                  f"weights), {len(source.label_names)} labels; the tokenizer pads on the right.", ""]
    fields = list(dm.text_fields)
    joined = (f" Texts of several fields were joined as `{dm.text_separator.join(fields)}` (fields "
              f"{', '.join(fields)}, separator {dm.text_separator!r}); give the pipeline the joined text.") if len(fields) > 1 else ""
    lines += ["## Usage", "", "```python", "from transformers import pipeline", "",
              f'classifier = pipeline("text-classification", model="PATH_OR_REPO"{trust})',
              'classifier(["your text"], truncation=True, top_k=None)   # scores of all labels',
              "```", "",
              f"`truncation=True` cuts texts at {source.max_length} tokens, where training did (the tokenizer's "
              f"`model_max_length`).{joined}", "",
              "Labels, in the model's output order: " + ", ".join(f"`{name}`" for name in source.label_names) + ".", ""]
    lines += ["## Data", "", f"Data directory: `{dm.data_dir}`" if dm.data_dir else "Data files:", ""]
    splits = info["splits"]
    lines += ["| split | file | rows |", "|---|---|---:|"]
    paths = {"train": dm.train_path, "validation": dm.val_path or f"held out of {dm.train_path}", "test": dm.test_path}
    lines += [f"| {name} | `{_cell(paths.get(name))}` | {entry['rows']} |" for name, entry in splits.items()]
    lines += ["", "Label counts:", "", "| label | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
    for label in source.label_names:
        lines.append(f"| {_cell(label)} | " + " | ".join(str(s["label_counts"].get(label, 0)) for s in splits.values()) + " |")
    lines += ["", "## Training config", "", "The essentials of the run's `config.yaml`:", "",
              "```yaml", yaml.safe_dump(config_essentials(run.config), sort_keys=False, allow_unicode=True).strip(),
              "```", ""]
    summary = info.get("run_summary")
    if summary:
        lines += [f"Fit: {summary.get('epochs')} epochs, best checkpoint `{Path(str(summary.get('best_checkpoint'))).name}` "
                  f"(validation macro-F1 {_number(summary.get('best_score'))}).", ""]
    lines += ["## Test metrics", ""]
    metrics = info.get("test_metrics")
    if isinstance(metrics, dict) and metrics:
        tested = info.get("tested_checkpoint")
        lines += ["From the run directory's `test/metrics.json`"
                  + (f" (`fenlei test --ckpt_path {tested}`)" if tested else "") + ":", "",
                  "| metric | value |", "|---|---:|"]
        lines += [f"| {_cell(k)} | {v:.4f} |" if isinstance(v, float) else f"| {_cell(k)} | {_cell(v)} |"
                  for k, v in metrics.items()]
        per_class = info.get("per_class_md")
        if per_class:
            lines += ["", "Per class (`test/per_class.md`):", "", per_class.strip()]
    else:
        lines += ["The run directory has no `test/metrics.json` (`fenlei test` was not run on it)."]
    check = info["check"]
    lines += ["", "## Export check", "",
              f"Loaded back with `{check['loaded_with']}` and compared with the fenlei module on {check['texts']} "
              f"held-out texts ({info['check_source']}): token ids identical "
              f"({check['tokenizer_mismatches']} mismatches), largest logit difference {check['max_abs_logit_diff']:.2e}, "
              f"argmax agreement {check['argmax_agreement']:.4f}.", "",
              "## Provenance", "",
              f"- checkpoint: `{run.checkpoint.name}` (sha256 `{info['checkpoint_sha256']}`)",
              f"- exported: {info['created']} with `{info['command']}`",
              f"- versions: {', '.join(f'{k} {v}' for k, v in info['versions'].items())}", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- the export


def build_folder(source: HfSource, tmp: Path, options: Any, log: Any) -> dict[str, Any]:
    from fenlei.deploy.bundle import library_versions

    dm = source.datamodule
    if options.source.eval_file:
        from datamodules.readers import read_records

        records = read_records(Path(options.source.eval_file), list(dm.text_fields), dm.label_field, dm.text_separator)
        check_source = str(options.source.eval_file)
    else:
        records = dm.split_records("validation")
        check_source = f"validation split of {dm.val_path}" if dm.val_path else f"validation split held out of {dm.train_path}"
    texts = [r.text for r in records][:CHECK_TEXTS]
    if not texts:
        raise ExportError(f"--format hf: no held-out texts to check the folder on ({check_source} is empty)")
    # The module's own logits first: a decoder's LoRA is merged into its weights when the folder is written.
    reference, fenlei_ids = fenlei_logits(source, texts, options.batch_size)
    info: dict[str, Any] = {"name": options.out.name}
    if source.kind == "encoder":
        log("writing the encoder classifier (modeling_fenlei.py, config.json, model.safetensors)")
        write_encoder_model(source, tmp)
        info["backbone_model_type"] = source.model.backbone.config.model_type
    else:
        log("merging LoRA and writing the decoder sequence classifier")
        info.update(write_decoder_model(source, tmp))
    write_tokenizer(source, tmp)
    log(f"loading the folder back and comparing it with the module on {len(texts)} held-out texts")
    check = check_folder(source, tmp, texts, reference, fenlei_ids, options.batch_size)
    run = source.run
    run_dir = run.run_dir
    info.update({
        "check": check, "check_source": check_source, "splits": split_summary(dm),
        "run_summary": _read_json(run_dir / "run_summary.json") if run_dir else None,
        "test_metrics": _read_json(run_dir / "test" / "metrics.json") if run_dir else None,
        "per_class_md": (run_dir / "test" / "per_class.md").read_text(encoding="utf-8")
        if run_dir and (run_dir / "test" / "per_class.md").is_file() else None,
        "tested_checkpoint": tested_checkpoint(run_dir / "test" / "config.yaml") if run_dir else None,
        "checkpoint_sha256": file_sha256(run.checkpoint),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["fenlei", "export", *options.argv]),
        "versions": library_versions(),
    })
    atomic_write_text(tmp / "README.md", model_card(source, info))
    export = {
        "format": staging.HF_FORMAT, "format_version": 1, "created": info["created"], "kind": source.kind,
        "labels": source.label_names, "max_length": source.max_length,
        "text_fields": list(dm.text_fields), "text_separator": dm.text_separator,
        "source": {"checkpoint": str(run.checkpoint.resolve()), "checkpoint_sha256": info["checkpoint_sha256"],
                   "run_dir": str(run_dir.resolve()) if run_dir else None, "config_file": str(run.config_path.resolve()),
                   "model_class": run.model_class_path},
        "check": {**check, "source": check_source}, "splits": info["splits"], "test_metrics": info["test_metrics"],
        "versions": info["versions"], "command": info["command"],
    }
    atomic_write_json(tmp / staging.HF_MARKER_FILE, export)
    export["files"] = sorted(p.name for p in tmp.iterdir() if p.is_file() and not p.name.startswith("."))
    return export


def export_hf(options: Any) -> dict[str, Any]:
    """Write the HF folder at ``--out`` (atomically, as a bundle) and push it if asked; returns fenlei_export.json."""
    import torch

    check_hub_options(options.hub)
    staging.check_out(options.out, options.overwrite)
    log = _log(options.quiet)
    staging.clean_stale_temporaries(options.out.parent, log)
    torch.set_num_threads(max(1, options.threads or torch.get_num_threads()))
    if options.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    source = load_hf_export_source(options)
    result = staging.locked_atomic_dir(options.out, lambda tmp: build_folder(source, tmp, options, log),
                                       before_replace=staging.replaceable)
    if options.hub.repo_id:
        result["push"] = push_to_hub(options.out, options.hub, log)
    return result


# ----------------------------------------------------------------------------------------------- the hub


def check_hub_options(hub: Any) -> None:
    if hub.dry_run and not hub.repo_id:
        raise ExportError("--dry_run: only with --push_to_hub REPO_ID (it prints what would be uploaded)")
    if hub.private and not hub.repo_id:
        raise ExportError("--private: only with --push_to_hub REPO_ID (the repository it creates)")
    if hub.repo_id:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(hub.repo_id)
        except HFValidationError as err:
            raise ExportError(f"--push_to_hub {hub.repo_id!r}: not a hub repository id ({str(err).splitlines()[0]})") from None


def upload_plan(folder: Path, hub: Any) -> dict[str, Any]:
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    sizes = {name: (folder / name).stat().st_size for name in files}
    return {"repo_id": hub.repo_id, "repo_type": "model", "private": hub.private, "folder": str(folder),
            "files": sizes, "bytes": sum(sizes.values())}


def push_to_hub(folder: Path, hub: Any, log: Any) -> dict[str, Any]:
    """Upload ``folder`` to the model repository ``hub.repo_id`` (created if missing); ``dry_run``: print the plan."""
    plan = upload_plan(folder, hub)
    if hub.dry_run:
        print(f"dry run: would upload {len(plan['files'])} files ({plan['bytes'] / 1e6:.1f} MB) from {folder} to "
              f"https://huggingface.co/{hub.repo_id} ({'private' if hub.private else 'public'} model repository, "
              "created if missing):")
        for name, size in plan["files"].items():
            print(f"  {name}  {size} bytes")
        return {**plan, "dry_run": True}
    from huggingface_hub import HfApi

    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    try:
        import httpx

        errors += (httpx.HTTPError,)
    except ImportError:
        pass
    log(f"uploading {folder} to {hub.repo_id}")
    try:
        api = HfApi()
        api.create_repo(hub.repo_id, repo_type="model", private=hub.private, exist_ok=True)
        commit = api.upload_folder(repo_id=hub.repo_id, folder_path=str(folder), repo_type="model",
                                   commit_message=f"fenlei export --format hf ({folder.name})")
    except errors as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportError(f"--push_to_hub {hub.repo_id}: upload failed ({type(err).__name__}: {first}); the folder "
                          f"is written at {folder}") from None
    return {**plan, "dry_run": False, "commit": str(getattr(commit, "commit_url", commit))}


__all__ = ["export_hf", "load_hf_export_source", "model_card", "push_to_hub"]
