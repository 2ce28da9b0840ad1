"""Export a trained classifier to a self-contained ONNX bundle, behind a parity gate.

    fenlei export --ckpt_path runs/NAME/checkpoints/best-epoch03.ckpt --out bundles/NAME
    fenlei export --ckpt_path best --run_dir runs/NAME --out bundles/NAME      (or --ckpt_path runs/NAME)
    fenlei export --hf_model DIR --data_dir DATA --out bundles/NAME            (HF sequence classifier,
                                                                              e.g. a merged LoRA model)
    fenlei export --config export.yaml                                         (the same options in YAML)
    fenlei export --format hf --ckpt_path runs/NAME --out hf/NAME              (a Hugging Face model folder,
                                                                              fenlei.deploy.hf_export)

Steps: load the model and the tokenizer/max_length/data of its run (the classes ``config.yaml`` records);
export logits-only ONNX (legacy exporter); fuse the graph (onnxruntime transformers optimizer); quantize to INT8
(dynamic by default, or static QDQ S8S8 calibrated on training texts); compare torch fp32, ORT fp32 and ORT int8
on held-out data at the deployment batch size (argmax agreement, macro-F1 change) and fail past the limits unless
``--force``; fit a temperature per precision on the held-out logits and choose the abstention threshold; write
labels, calibration, metadata. Everything is built in a hidden temporary folder beside ``--out`` and renamed into
place at the end, so a failed export leaves nothing that looks like a bundle.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional

from fenlei.deploy import bundle, calibration_step, staging
from fenlei.deploy.calibration_step import CalibrationOptions
from fenlei.deploy.errors import ExportError
from fenlei.deploy.parity import GateLimits, Log, failure_message, gate_attempts, token_mismatches, torch_logits
from fenlei.deploy.quantization import (
    QuantizationOptions,
    attempts_for_graph,
    prepare_dynamic,
    quantization_attempts,
    quantize,
    untried_remedies,
)
from fenlei.deploy.sources import Source, SourceOptions, load_source
from fenlei.io import atomic_write_json

__all__ = ["ExportError", "ExportOptions", "export", "main", "parse_options", "quantization_attempts"]

PROG = "fenlei export"
LIST_OPTIONS = {"text_fields": str, "parity_batch_sizes": int, "vocab_scripts": str}  # written `--name a b c`, as argparse's nargs took them


@dataclass(frozen=True)
class HubOptions:
    """``--push_to_hub`` (``--format hf`` only): where the folder goes once written."""

    repo_id: Optional[str] = None
    private: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class ExportOptions:
    """Every option of one export, grouped by the job that uses it."""

    source: SourceOptions
    out: Path
    format: Literal["onnx", "hf"] = "onnx"
    hub: HubOptions = field(default_factory=HubOptions)
    overwrite: bool = False
    quantization: QuantizationOptions = field(default_factory=QuantizationOptions)
    optimize: bool = True
    cpu_rewrites: bool = True
    vocab_scripts: tuple[str, ...] = ()  # empty: the whole vocabulary
    batch_size: int = 32
    parity_batch_sizes: tuple[int, ...] = (1,)
    limits: GateLimits = field(default_factory=GateLimits)
    force: bool = False
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)
    threads: Optional[int] = None
    quiet: bool = False
    argv: tuple[str, ...] = ()  # the command line, for metadata.json


def export_options(
    out: str,
    format: Literal["onnx", "hf"] = "onnx",  # noqa: A002 - the option is --format
    ckpt_path: Optional[str] = None,
    run_dir: Optional[str] = None,
    run_config: Optional[str] = None,
    hf_model: Optional[str] = None,
    data_dir: Optional[str] = None,
    eval_file: Optional[str] = None,
    text_fields: Optional[list[str]] = None,
    label_field: str = "label",
    max_length: Optional[int] = None,
    overwrite: bool = False,
    quantization: Literal["dynamic", "static"] = "dynamic",
    per_channel: bool = True,
    reduce_range: Optional[bool] = None,
    keep_ffn_out_fp32: Optional[bool] = None,
    keep_head_fp32: Optional[bool] = None,
    weight_only_matmuls: Optional[bool] = None,
    fp32_attention: Optional[bool] = None,
    gelu_approximation: bool = True,
    calibration_size: int = 512,
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax",
    embedding_quantization: Literal["auto", "none", "int8", "int4"] = "auto",
    vocab_scripts: Optional[list[str]] = None,
    no_optimize: bool = False,
    no_cpu_rewrites: bool = False,
    batch_size: int = 32,
    parity_batch_sizes: list[int] = [1],  # noqa: B006 - a literal default shows in --help; copied, never mutated
    min_agreement: float = 0.99,
    max_f1_change: float = 0.5,
    force: bool = False,
    no_temperature: bool = False,
    threshold: Literal["none", "global", "per_class"] = "global",
    target_precision: Optional[float] = None,
    target_coverage: float = 0.95,
    threshold_value: Optional[float] = None,
    min_class_support: int = 30,
    threads: Optional[int] = None,
    seed: int = 0,
    quiet: bool = False,
    push_to_hub: Optional[str] = None,
    private: bool = False,
    dry_run: bool = False,
) -> ExportOptions:
    """Export a trained classifier to an ONNX fp32 + INT8 bundle behind a parity gate.

    Args:
        out: Bundle folder to write (must not exist unless --overwrite).
        format: onnx: the ONNX fp32 + INT8 bundle that fenlei infer/serve run. hf: a Hugging Face model folder
            (config.json with the labels, model.safetensors, the tokenizer, a model card README.md; encoder
            classifiers with their model code, modeling_fenlei.py) that AutoModelForSequenceClassification and
            pipeline("text-classification") load with trust_remote_code=True; checked by loading it back. The
            quantization, gate and calibration options apply to onnx only.
        ckpt_path: A .ckpt file, a run directory (its best checkpoint), or 'best' with --run_dir.
        run_dir: Run directory holding config.yaml (default: the checkpoint's run directory).
        run_config: A run config.yaml to use instead of the run directory's (``--config RUN.yaml`` still works).
        hf_model: HF AutoModelForSequenceClassification folder (instead of --ckpt_path).
        data_dir: Override the data directory of the run's config (or data for --hf_model).
        eval_file: Held-out file for the parity gate and calibration (default: the validation split).
        text_fields: Text fields (--hf_model only; default: text).
        label_field: Label field (--hf_model only).
        max_length: Token limit (default: the run's data.max_length).
        overwrite: Replace an existing bundle at --out (atomically).
        quantization: INT8 scheme.
        per_channel: Per-channel weight scales (--no-per_channel: per-tensor).
        reduce_range: 7-bit weights: avoids u8s8 saturation on CPUs without VNNI (AVX2 only). Default: static
            off; dynamic tries 8-bit weights and, only if the parity gate fails, 7-bit (both attempts are in
            metadata.json); give --reduce_range or --no-reduce_range for a single attempt.
        keep_ffn_out_fp32: Leave the FFN output projections unquantized (more accurate, about 1/3 of the encoder
            weights stay fp32). Default: dynamic tries it last, only if the all-INT8 attempts fail the gate.
        keep_head_fp32: Leave the classification head unquantized (default on for dynamic: it runs once per
            text, where INT8 only adds quantize/dequantize work; off for static).
        weight_only_matmuls: Dynamic INT8: the MatMuls as onnxruntime's 8-bit weight-only MatMulNBits (blocks of
            32, int8 compute with an activation scale per block instead of one per tensor; the Attention stays
            QAttention): as small as all-INT8 and closer to fp32. Default: tried after the 7-bit attempt, before the
            FFN outputs in fp32, only if the gate failed; --weight_only_matmuls for that attempt alone,
            --no-weight_only_matmuls to leave it out.
        fp32_attention: With the weight-only MatMuls: each fused Attention split into its packed Q/K/V projection
            (a MatMulNBits like the others) and an fp32 MultiHeadAttention core, instead of QAttention (one
            activation scale per tensor): closer to fp32 at about the same size. Default: tried after the
            weight-only attempt with QAttention, only if the gate failed; --fp32_attention for that attempt alone,
            --no-fp32_attention to leave it out.
        gelu_approximation: Dynamic INT8 graph only: tanh GELU (FastGelu) instead of erf, at most ~3e-4 apart,
            far under the INT8 step, and a cheaper CPU kernel (model_fp32.onnx keeps the exact GELU).
        calibration_size: Training texts for static calibration.
        calibration_method: Static calibration method.
        embedding_quantization: Dynamic INT8 graph: the word-embedding table as onnxruntime's GatherBlockQuantized
            with 8-bit (int8, block 128) or 4-bit (int4, block 16, fp16 scales) rows and one scale per block, or fp32 (none).
            auto: int8 for tables of 100,000 rows or more (multilingual vocabularies, where the table is most of the
            model), the default dynamic quantization below that.
        vocab_scripts: Trim the word-embedding table to the pieces of these scripts (e.g. HAN LATIN; 'auto': the
            scripts of the training texts); other pieces map to <unk>. The effect on held-out text is gated and
            recorded (metadata.json: vocab_trim). Default: the whole vocabulary.
        no_optimize: Skip graph fusion (slower; for debugging).
        no_cpu_rewrites: Fuse, but keep onnxruntime's fused SkipLayerNormalization/BiasGelu/token-type nodes as
            they are (fenlei/deploy/cpu_rewrites.py; for comparisons, or for consumers that load the ONNX with
            their own session options).
        batch_size: Deployment batch size; parity is measured at it.
        parity_batch_sizes: Further INT8 batch sizes gated too (default 1: single requests to the service).
        min_agreement: Minimum argmax agreement with torch fp32.
        max_f1_change: Maximum |macro-F1 change| in points.
        force: Write the bundle even if the parity gate fails (recorded).
        no_temperature: Do not fit a temperature (T = 1).
        threshold: Abstention threshold on calibrated confidence.
        target_precision: Choose the threshold for this precision on held-out data.
        target_coverage: Choose the threshold for this coverage (ignored with --target_precision).
        threshold_value: Use this global threshold as is.
        min_class_support: per_class: fewer predictions -> global threshold.
        threads: Torch and onnxruntime threads during export.
        seed: Seed of the calibration sample.
        quiet: No progress messages.
        push_to_hub: --format hf: upload the folder, once written, to this Hugging Face model repository
            (USER/NAME; created if missing; the token is huggingface_hub's: HF_TOKEN or `hf auth login`).
        private: --push_to_hub: create the repository private.
        dry_run: --push_to_hub: write the folder and print what would be uploaded, without any network access.
    """
    return ExportOptions(
        source=SourceOptions(ckpt_path=ckpt_path, run_dir=run_dir, run_config=run_config, hf_model=hf_model,
                             data_dir=data_dir, eval_file=eval_file, text_fields=text_fields, label_field=label_field,
                             max_length=max_length),
        out=Path(out), format=format,
        hub=HubOptions(repo_id=push_to_hub, private=private, dry_run=dry_run), overwrite=overwrite,
        quantization=QuantizationOptions(mode=quantization, per_channel=per_channel, reduce_range=reduce_range,
                                         keep_ffn_out_fp32=keep_ffn_out_fp32, keep_head_fp32=keep_head_fp32,
                                         weight_only_matmuls=weight_only_matmuls, fp32_attention=fp32_attention,
                                         gelu_approximation=gelu_approximation, calibration_size=calibration_size,
                                         calibration_method=calibration_method, seed=seed,
                                         embedding=embedding_quantization),
        optimize=not no_optimize, cpu_rewrites=not no_cpu_rewrites, vocab_scripts=tuple(vocab_scripts or ()),
        batch_size=batch_size,
        parity_batch_sizes=tuple(parity_batch_sizes), limits=GateLimits(min_agreement, max_f1_change), force=force,
        calibration=CalibrationOptions(temperature=not no_temperature, threshold=threshold,
                                       target_precision=target_precision, target_coverage=target_coverage,
                                       threshold_value=threshold_value, min_class_support=min_class_support),
        threads=threads, quiet=quiet,
    )


# ----------------------------------------------------------------------------------------------- command line


def compatible_argv(argv: Sequence[str]) -> list[str]:
    """The command lines ``cli.py export`` always took, in the typed parser's terms.

    ``--text_fields a b`` / ``--parity_batch_sizes 1 8`` (several values after one flag) become one list value.
    ``--config`` names the options YAML of the typed command; a run's ``config.yaml`` given there (what the flag
    meant before) is passed on as ``--run_config``.
    """
    out: list[str] = []
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        name = token[2:] if token.startswith("--") and "=" not in token else None
        if name in LIST_OPTIONS and not (i + 1 < len(tokens) and tokens[i + 1].startswith("[")):
            values = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                values.append(tokens[i + 1])
                i += 1
            try:
                out.append(f"--{name}={json.dumps([LIST_OPTIONS[name](v) for v in values])}")
            except ValueError:
                out += [token, *values]  # not numbers: the parser names the bad value
        elif name == "config" and i + 1 < len(tokens) and _is_run_config(tokens[i + 1]):
            out += ["--run_config", tokens[i + 1]]
            i += 1
        else:
            out.append(token)
        i += 1
    return out


def _is_run_config(path: str) -> bool:
    """A LightningCLI config (model and data sections), not a file of export options."""
    import yaml

    try:
        content = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(content, dict) and "model" in content and "data" in content


def parse_options(argv: Sequence[str]) -> ExportOptions:
    """The options of ``fenlei export ARGV`` (``--help`` and bad options exit, as the command does)."""
    from fenlei.typed_cli import run_typed

    parsed: list[ExportOptions] = []

    @functools.wraps(export_options)
    def keep(*args: Any, **kwargs: Any) -> None:
        parsed.append(export_options(*args, **kwargs))

    run_typed(keep, compatible_argv(argv), prog=PROG, description=__doc__)
    return replace(parsed[0], argv=tuple(argv))


def main(argv: list[str]) -> int:
    """``fenlei export``. User errors (ExportError, DataError, RunError) propagate to ``fenlei.commands.main``."""
    options = parse_options(argv)
    metadata = export(options)
    if options.format == "hf":
        check = metadata["check"]
        pushed = metadata.get("push")
        print(f"export: wrote {options.out} (Hugging Face folder, {len(metadata['labels'])} labels; loaded back: "
              f"logits within {check['max_abs_logit_diff']:.1e} of the run's on {check['texts']} texts)"
              + ("" if not pushed or pushed["dry_run"] else f"; uploaded to {pushed['repo_id']}"), file=sys.stderr)
        return 0
    sizes = metadata["sizes_bytes"]
    print(f"export: wrote {options.out} (fp32 {sizes['model_fp32.onnx'] / 1e6:.1f} MB, int8 "
          f"{sizes['model_int8.onnx'] / 1e6:.1f} MB; parity {'passed' if metadata['parity']['passed'] else 'FAILED (forced)'})",
          file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- orchestration


def export(options: ExportOptions) -> dict[str, Any]:
    """Build the bundle in a temporary folder beside ``--out`` and rename it into place only if all went well.

    ``--overwrite`` replaces only a bundle (checked now and again just before the rename); the temporary folders
    of exports into the same parent that were killed are removed first, and bundles they had set aside restored or
    removed (fenlei.deploy.staging). ``--format hf`` writes a Hugging Face folder instead (fenlei.deploy.hf_export)."""
    if options.format == "hf":
        from fenlei.deploy.hf_export import export_hf

        return export_hf(options)
    if options.hub.repo_id or options.hub.dry_run or options.hub.private:
        raise ExportError("--push_to_hub/--dry_run/--private: only with --format hf (a bundle is served by fenlei "
                          "serve)")
    # Cleaning first: it may move back a bundle that a killed --overwrite export had set aside, which --out must then
    # be checked against (without --overwrite it is not replaced).
    staging.clean_stale_temporaries(options.out.parent, _logger(options.quiet))
    staging.check_out(options.out, options.overwrite)
    needs_train = options.quantization.mode == "static" or any(s.lower() == "auto" for s in options.vocab_scripts)
    source = load_source(options.source, train_texts=needs_train)
    return staging.locked_atomic_dir(options.out, lambda tmp: build_bundle(source, tmp, options),
                                     before_replace=staging.replaceable)


def _logger(quiet: bool) -> Log:
    def log(message: str) -> None:
        if not quiet:
            print(f"export: {message}", file=sys.stderr)

    return log


def build_bundle(source: Source, tmp: Path, options: ExportOptions) -> dict[str, Any]:
    """Write every bundle file into ``tmp``; return the metadata (also written). Raises ExportError on a failed gate."""
    import torch

    from fenlei.serving.predictor import BundlePredictor

    log = _logger(options.quiet)
    torch.set_num_threads(max(1, options.threads or torch.get_num_threads()))
    q = options.quantization

    # 1. Tokenizer and labels, 2. export (raw) and fuse (the fp32 bundle model).
    bundle.write_tokenizer_and_labels(tmp, source)
    raw, fp32, optimization = bundle.export_graphs(source, tmp, options.optimize, options.cpu_rewrites, log)
    vocab_trim = bundle.trim_vocabulary(source, (raw, fp32), options.vocab_scripts, log) if options.vocab_scripts else None
    bundle.write_stubs(tmp, source, optimization)

    # 3. Parity gate at the deployment batch size(s): torch and ORT fp32 logits once, INT8 per attempt.
    texts, labels = source.eval_texts, source.eval_labels
    log(f"parity gate on {len(texts)} held-out texts ({source.eval_source})")
    reference, hf_ids = torch_logits(source.model, source.tokenizer, source.max_length, len(source.label_names),
                                     texts, options.batch_size)
    ort_fp32 = BundlePredictor(tmp, "fp32", options.threads, building=True)
    mismatches = token_mismatches([e.ids for e in ort_fp32.tokenizer.encode_batch(texts)], hf_ids)
    fp32_logits = ort_fp32.predict_logits(texts, options.batch_size)
    if vocab_trim is not None:
        # Measured on the held-out texts, which chose nothing: the scripts come from the training texts or the user.
        vocab_trim["heldout"] = bundle.trim_effect(hf_ids, vocab_trim.pop("kept_ids"))
        log(f"  vocabulary trim: {vocab_trim['heldout']['texts_changed']} of {len(texts)} held-out texts have a "
            f"piece mapped to <unk> ({vocab_trim['heldout']['tokens_changed']} tokens)")
    del ort_fp32
    dynamic = prepare_dynamic(fp32, tmp, q) if q.mode == "dynamic" else None
    attempts = quantization_attempts(q)
    if dynamic is not None:
        attempts = attempts_for_graph(attempts, bool(dynamic.ffn_out), q, dynamic.has_attention)
    int8 = tmp / bundle.INT8_GRAPH
    # With --force every attempt's INT8 file is set aside, so that a gate refusing them all ships the closest
    # attempt rather than the last one made.
    kept: list[Path] = []

    def try_attempt(attempt: tuple[bool, bool]) -> tuple[dict[str, Any], dict[str, Any], float]:
        description = quantize(q, attempt, tmp, raw, int8, dynamic, source.train_texts, options.threads, log)
        ort_int8 = BundlePredictor(tmp, "int8", options.threads, building=True)
        logits = {"ort_fp32": fp32_logits}
        for bs in sorted(set(options.parity_batch_sizes) | {options.batch_size}):
            logits["ort_int8" if bs == options.batch_size else f"ort_int8_batch{bs}"] = ort_int8.predict_logits(texts, bs)
        size_mb = round(int8.stat().st_size / 1e6, 2)
        if options.force:
            del ort_int8
            kept.append(tmp / f".model_int8.attempt{len(kept)}.onnx")
            os.replace(int8, kept[-1])
        return description, logits, size_mb

    outcome = gate_attempts(attempts, try_attempt, labels, reference, options.limits, mismatches, log)
    for number, path in enumerate(kept):
        if number == outcome.chosen:
            os.replace(path, int8)
        else:
            path.unlink()
    raw.unlink()
    if dynamic is not None and dynamic.graph != fp32:
        dynamic.graph.unlink()
    parity = outcome.parity
    parity.update({"eval_source": source.eval_source, "n": len(texts), "batch_size": options.batch_size,
                   "tokenizer_mismatches": mismatches})
    parity["forced"] = bool(not parity["passed"] and options.force)
    if not parity["passed"]:
        if not options.force:
            tried = outcome.quantization["attempts"]
            raise ExportError(failure_message(len(texts), parity, tried, untried_remedies(q, tried)))
        log(f"WARNING: parity gate failed but --force given: {'; '.join(parity['failures'])}")

    # 4. Calibration per precision (the served model's own logits) and thresholds.
    calibration = calibration_step.bundle_calibration(
        {"fp32": outcome.logits["ort_fp32"], "int8": outcome.logits["ort_int8"]}, labels, options.calibration,
        source.eval_source)
    atomic_write_json(tmp / "calibration.json", calibration)
    for precision, entry in calibration["by_precision"].items():
        report = entry["report"]
        if report:
            log(f"  {precision}: temperature {report['temperature']:.3f}, ECE {report['ece_before']:.4f} -> "
                f"{report['ece_after']:.4f}")

    # 5. Metadata, written last.
    metadata = bundle.bundle_metadata(source, optimization, outcome.quantization, parity, calibration,
                                      bundle.file_sizes(tmp), list(options.argv))
    metadata["vocab_trim"] = vocab_trim  # None: the whole vocabulary
    bundle.write_metadata(tmp, metadata)
    return metadata
