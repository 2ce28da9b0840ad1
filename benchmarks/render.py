"""Render BENCHMARKS.md from ``benchmarks/results/*.json`` and the notes beside them.

    python benchmarks/render.py
    python benchmarks/render.py --results benchmarks/results/smoke --out benchmarks/results/smoke/BENCHMARKS.smoke.md

A results file of a smoke run (``"smoke": true``, or a ``run_all`` stamp of the smoke budget) is marked as such in
its section title and in each summary row it gives; the second form (what ``benchmarks/run_all.py --budget smoke``
runs) renders a smoke run's folder under a header that says so.

BENCHMARKS.md opens with one summary table (a row per claim: target, measured value, met or not, date, CPU), then
has one section per benchmark in the fixed order of ``GROUPS`` (training, numeric targets, decoder LMs, calibration
and out-of-scope rejection, hyperparameter search, deployment, data tools), not in file-name order. A section may fold
several results files (the
reruns of one benchmark) and then shows min / median / max across them.

Every figure comes from a results file. The prose of a section (method, budget, caveats, why a target is missed)
is ``benchmarks/results/<section key>.md``; its list after a line ``Missed targets:`` (items
``- `target key`: reason``) also gives the reason shown in the summary table. A results file that no section
names is rendered at the end, under "Other results", when a renderer knows its kind.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from benchmarks.common import beyond_seed_range  # noqa: E402
from benchmarks.decoder_classifiers import ROUTE_KEYS  # noqa: E402
from fenlei.predictions import COLLAPSED_SHARE  # noqa: E402

Res = dict[str, Any]


# ---------------------------------------------------------------------------------------------------- formatting


def pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def num(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def ratio(x: Any) -> str:
    return "–" if x is None else f"{x}x"


def spread(values: Sequence[Any], fmt: Callable[[Any], str]) -> str:
    """One value when every run agrees (or there is one run), else ``min / median / max``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(set(vals)) == 1:
        return fmt(vals[0])
    return f"{fmt(min(vals))} / {fmt(statistics.median(vals))} / {fmt(max(vals))}"


def yes_no(flag: Any) -> str:
    return {True: "yes", False: "no"}.get(flag, "–")


ARCH_ONLY = {"", "x86_64", "amd64", "aarch64", "arm64", "i386", "i686"}
FLAG_ORDER = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_of(res: Res) -> str:
    """CPU model and the flags that matter here (VNNI, bf16, AMX), as far as a results file records them.

    Understands ``fenlei.cpu.cpu_record`` (``{"model", "cores", "flags": [present flags]}`` under ``cpu`` or
    ``machine.cpu``) and the older records: ``machine.processor``, ``machine.vnni``, ``cpu_flags`` maps, and
    machine strings such as ``"x86_64, 2 CPUs, torch threads 2"``.
    """
    machine = res.get("machine")
    record = res.get("cpu") if isinstance(res.get("cpu"), dict) else None
    if record is None and isinstance(machine, dict) and isinstance(machine.get("cpu"), dict):
        record = machine["cpu"]
    model, flags, cores = "", {}, None
    if record is not None:
        model, cores = str(record.get("model") or ""), record.get("cores")
        present = set(record.get("flags") or [])
        flags = {f: f in present for f in FLAG_ORDER if f != "vnni"} if present else {}  # [] = unknown
    elif isinstance(machine, dict):
        model = str(machine.get("cpu_model") or machine.get("processor") or "")
        flags.update(machine.get("cpu_flags") or {})
        if "vnni" in machine:
            flags["vnni"] = machine["vnni"]
        cores = machine.get("cpus")
    elif isinstance(machine, str):  # "x86_64, 2 CPUs, ..." or "a description: AMD EPYC, 2 cores, ..."
        model = machine.split(": ", 1)[-1].split(",", 1)[0].strip()
        found = re.search(r"(\d+) (?:CPUs|cores)", machine)
        cores = int(found.group(1)) if found else None
    if isinstance(res.get("cpu_flags"), dict):
        flags.update(res["cpu_flags"])
    cores = cores or res.get("cpus")
    words = model.split()  # a processor string may carry flags: "AMD EPYC avx512_vnni avx512_bf16"
    for w in [w for w in words if w.lower().startswith(("avx", "amx"))]:
        flags[w.lower()] = True
        words.remove(w)
    model = " ".join(words)
    model = "" if model.lower() in ARCH_ONLY else model
    on = [f for f in FLAG_ORDER if flags.get(f) is True] + sorted(f for f, v in flags.items() if v is True and f not in FLAG_ORDER)
    off = [f for f in FLAG_ORDER if flags.get(f) is False]
    if not model and not flags:
        text = "not recorded"
    else:
        flag_text = "; ".join(p for p in (", ".join(on), ("no " + ", ".join(off)) if off else "") if p) or "flags not recorded"
        text = f"{model or 'model not recorded'}; {flag_text}"
    return text + (f" ({cores} cores)" if cores else "")


def cpus_of(results: Sequence[Res]) -> str:
    return "; ".join(dict.fromkeys(cpu_of(r) for r in results))


def dates_of(results: Sequence[Res]) -> str:
    return ", ".join(sorted({str(r.get("date", "not recorded")) for r in results}))


def bound(key: str) -> str | None:
    """The bound a target key names: ``speedup_vs_torch_ge_3.5x`` -> ``≥ 3.5x``; ``..._ge_0.935`` -> ``≥ 93.5%``."""
    found = re.search(r"_(ge|le)_(\d+(?:\.\d+)?)(x|pct|pt)?(?=_|$)", key)
    if not found:
        return None
    op = "≥" if found.group(1) == "ge" else "≤"
    value, unit = found.group(2), found.group(3)
    if unit == "x":
        return f"{op} {value}x"
    if unit == "pct":
        return f"{op} {value}%"
    if unit == "pt":
        return f"{op} {value} pt"
    return f"{op} {100 * float(value):g}%" if float(value) <= 1 else f"{op} {value}"


# ---------------------------------------------------------------------------------------------------- notes


def read_note(key: str, folder: Path = RESULTS) -> str:
    path = folder / f"{key}.md"
    return demote_headings(path.read_text().strip()) if path.exists() else ""


def demote_headings(note: str, below: int = 3) -> str:
    """A note's own headings, placed under its section's ``###``: ``#`` becomes ``####`` (outside code fences), so
    that BENCHMARKS.md keeps one outline."""
    out, fenced = [], False
    for line in note.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#{1,6}) ", line)):
            line = "#" * min(6, len(m.group(1)) + below) + line[len(m.group(1)):]  # markdown has six levels
        out.append(line)
    return "\n".join(out)


def missed_reasons(note: str) -> dict[str, str]:
    """``- `key`: reason`` items after a ``Missed targets:`` line of a note."""
    if "Missed targets:" not in note:
        return {}
    tail = note.split("Missed targets:", 1)[1]
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^- `([^`]+)`: (.+)$", tail, flags=re.M)}


# ---------------------------------------------------------------------------------------------------- summary rows


@dataclass
class Row:
    claim: str
    target: str  # "none set" when the benchmark sets none
    measured: str
    met: list[bool]  # one verdict per run; empty: no target
    date: str
    cpu: str
    key: str = ""  # target key, for the reason of a miss


def met_text(row: Row, reasons: dict[str, str]) -> str:
    if not row.met:
        return "no target"
    n, k = len(row.met), sum(row.met)
    runs = f" ({k} of {n} runs)" if n > 1 else ""
    if k == n:
        return "met" + runs
    reason = reasons.get(row.key, "")
    verdict = "**not met**" if k == 0 else "**not reliably met**"
    return verdict + runs + (f": {reason}" if reason else "")


# ---------------------------------------------------------------------------------------------------- training


def render_banking77(runs: list[Res], ctx: Res) -> str:
    res = runs[-1]
    labels = {"fenlei": "fenlei", "hf_trainer": "HF Trainer (plain script)",
              "hf_trainer_tuned": "HF Trainer, group_by_length + bf16 where the CPU has it natively"}
    rows = []
    for key, label in labels.items():
        if key not in res:
            continue
        r = res[key]
        tput = ", ".join(num(v) for v in r.get("throughput_runs", []))
        if r.get("precision_used"):
            label += f" ({r['precision_used']})"
        rows.append(f"| {label} | {pct(r['test_accuracy'])} | {pct(r['test_macro_f1'])} | {num(r['train_samples_per_s'])} "
                    f"({tput}) | {num(r.get('full_run_train_s'), 0)} | {r.get('train_examples', '')} |")
    budget = res["budget"]
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; platform {res['machine']['platform']}; config `{res['config']}`.  ",
           f"Budget{' (every system)' if 'hf_trainer' in res else ''}: {budget['epochs']} epochs, lr {budget['lr']}, "
           f"batch {budget['batch_size']}, max_length {budget['max_length']}, seed {budget['seed']}.", "",
           "| system | test accuracy | test macro-F1 | train samples/s, median (runs) | full-run train s | trained on |",
           "|---|---|---|---|---|---|", *rows, ""]
    if "throughput_steps" in res.get("fenlei", {}):
        out += [f"Throughput: {res['fenlei']['throughput_steps']} training steps per run, validation excluded. Accuracy: "
                "one full run per system, evaluated on the test split once (fenlei: its best epoch on its validation split).", ""]
    if "targets" in res:
        target_rows = rows_banking77(runs, ctx)
        out += ["| target | value | met |", "|---|---|---|"]
        out += [f"| {r.claim} ({r.target}) | {r.measured} | {yes_no(r.met[0])} |" for r in target_rows]
        out.append("")
        if not any("test_accuracy_ge_" in r.key for r in target_rows):
            out += [f"The test-accuracy target ({pct(res['fenlei']['test_accuracy'])} in this one run) is judged on the "
                    "mean over seeds: [seed_spread](#seed_spread).", ""]
    return "\n".join(out)


BANKING77_TARGETS = (  # target key prefix, claim, how the measured value is read
    ("throughput_ge_", "_hf_trainer", "training throughput vs the plain HF Trainer script",
     lambda r: ratio(r["ratios"]["throughput_vs_hf_trainer"])),
    ("throughput_ge_", "_hf_trainer_tuned", "training throughput vs HF Trainer with group_by_length + bf16",
     lambda r: ratio(r["ratios"]["throughput_vs_hf_trainer_tuned"])),
    ("fenlei_test_accuracy_ge_", "", "test accuracy", lambda r: pct(r["fenlei"]["test_accuracy"])),
    ("fenlei_accuracy_ge_hf_trainer", "", "test accuracy vs the plain HF Trainer script (one run each)",
     lambda r: f"{r['ratios']['accuracy_minus_hf_trainer_pt']:+.2f} pt"),
)


def rows_banking77(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    model = "MiniLM" if "minilm" in res["benchmark"] else "MPNet" if "mpnet" in res["benchmark"] else res["benchmark"]
    targets = res.get("targets")
    if not targets:
        return [Row(f"Banking77 test accuracy, {model} (fenlei)", "none set", pct(res["fenlei"]["test_accuracy"]), [],
                    res["date"], cpu_of(res))]
    rows = []
    # A target counts only on a mean over seeds where one exists (the seed_spread section carries it then).
    seeded = len(((ctx.get("seed_spread") or {}).get("suites") or {}).get(res["benchmark"], {}).get("seeds", [])) >= 2
    for prefix, suffix, claim, measured in BANKING77_TARGETS:
        if seeded and prefix == "fenlei_test_accuracy_ge_":
            continue
        for key, flag in targets.items():
            if key.startswith(prefix) and key.endswith(suffix):
                target = bound(key) or "≥ the plain HF Trainer script's"
                rows.append(Row(f"Banking77 {model}: {claim}", target, measured(res), [bool(flag)], res["date"], cpu_of(res), key))
                break
    return rows


SEED_FIGURES = {  # suite kind -> (figure key, column label)
    "fit_test": (("accuracy", "test accuracy"), ("f1_macro", "test macro-F1")),
    "clinc150_oos": (("in_scope_accuracy", "in-scope accuracy (no rejection)"),
                     ("oos_recall", "OOS recall, calibrated threshold tuned on validation"),
                     ("in_scope_accuracy_with_rejection", "in-scope accuracy with rejection, same threshold"),
                     ("bundle_threshold_oos_recall", "OOS recall at the bundle's own threshold"),
                     ("oos_auroc", "OOS AUROC")),
}


def _seed_stat(stat: Res | None, fmt: Callable[[Any], str]) -> str:
    """``mean ± std (min–max)``; the mean alone for one seed."""
    if not stat:
        return "–"
    if stat["n"] < 2:
        return fmt(stat["mean"])
    return f"{fmt(stat['mean'])} ± {fmt(stat['std'])} ({fmt(stat['min'])}–{fmt(stat['max'])})"


def _auroc(x: Any) -> str:
    return num(x, 3)


def render_seed_spread(runs: list[Res], ctx: Res) -> str:
    res = runs[-1]
    seeds = [r for suite in res["suites"].values() for r in suite["per_seed"]]
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; seeds fitted on: {cpus_of(seeds)}.  ",
           "Every suite is its benchmark config as it stands, once per seed (`--seed_everything`); figures are "
           "`mean ± sample std (min–max)` over the seeds. A target counts as met only when the mean meets it; "
           "two means differ only when their gap exceeds the larger of their two seed ranges (max - min).", "",
           "| suite | config | seeds | figure | over the seeds | per seed |", "|---|---|---|---|---|---|"]
    for suite in res["suites"].values():
        kind = "clinc150_oos" if "oos_recall" in suite["stats"] else "fit_test"
        for key, label in SEED_FIGURES[kind]:
            fmt = _auroc if key == "oos_auroc" else pct
            per = ", ".join(f"{fmt(r.get(key))} ({r['seed']})" for r in suite["per_seed"])
            out.append(f"| {suite['title']} | `{suite['config']}` | {len(suite['seeds'])} | {label} | "
                       f"{_seed_stat(suite['stats'].get(key), fmt)} | {per} |")
    out.append("")
    for name, c in (res.get("comparisons") or {}).items():
        if c:
            verdict = {True: "**more than the larger seed range**", False: "**not more than the larger seed range**",
                       None: "undecided (fewer than 2 seeds)"}[c["beyond_spread"]]
            out.append(f"`{name}`: gap {100 * c['gap']:+.2f} pt against a larger seed range of "
                       f"{100 * c['larger_seed_range']:.2f} pt: {verdict}.  ")
    return "\n".join(out) + "\n"


def rows_seed_spread(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    rows = []
    for name, suite in res["suites"].items():
        n = len(suite["seeds"])
        cpu = cpus_of(suite["per_seed"])
        date = res["date"]
        if "oos_recall" in suite["stats"]:
            st = suite["stats"]
            rows.append(Row(f"{suite['title']}: OOS recall at the bundle's own threshold / in-scope accuracy / AUROC, "
                            f"mean of {n} seeds", "none set",
                            f"{_seed_stat(st['bundle_threshold_oos_recall'], pct)} / {_seed_stat(st['in_scope_accuracy'], pct)} / "
                            f"{_seed_stat(st['oos_auroc'], _auroc)}", [], date, cpu))
            continue
        target = suite.get("target")
        measured = _seed_stat(suite["stats"]["accuracy"], pct)
        if target:
            measured += f"; {target['seeds_meeting']} of {n} seeds meet it"
            rows.append(Row(f"{suite['title']}: test accuracy, mean of {n} seeds", f"≥ {pct(target['mean_ge'])} (mean)",
                            measured, [bool(target["met"])], date, cpu, f"seed_spread_{name}"))
        else:
            rows.append(Row(f"{suite['title']}: test accuracy, mean of {n} seeds", "none set", measured, [], date, cpu))
    return rows


# ---------------------------------------------------------------------------------------------------- numeric targets


def render_gsm8k_lengths(runs: list[Res], ctx: Res) -> str:
    """One row per labelling scheme, sorted by target_mae (the error in answer words), with the transfer test."""
    res = runs[-1]
    rows = []
    for r in res["runs"]:
        t = r.get("transfer_alpaca", {})
        sp = r.get("spread", {})
        seeds = r.get("seeds") or [res["budget"].get("seed", 42)]

        def with_spread(key: str, fmt: Callable[[Any], str], value: Any = None, r: Res = r, sp: Res = sp) -> str:
            value = r[key] if value is None else value
            return fmt(value) if key not in sp or len(r.get("seeds", [])) < 2 else f"{fmt(value)} ± {fmt(sp[key] / 2)}"

        rows.append(
            f"| `{r['name']}` | {r['module']} | {r['scheme']} x {r['num_bins']} | {len(seeds)} "
            f"| {with_spread('accuracy', pct)} | {with_spread('macro_f1', pct)} "
            f"| {pct(r['min_bin_f1'])} | {num(r['mae_bins'], 3)} | {with_spread('qwk', lambda v: num(v, 3))} "
            f"| {num(r.get('target_spearman'), 2)} | **{with_spread('target_mae', lambda v: num(v, 2))}** "
            f"| {num(r['target_mae_vs_constant'], 3)} | {num(r['train_s'], 0)} | {pct(t.get('acc'))} "
            f"| {with_spread('transfer_target_mae', lambda v: num(v, 1), t.get('target_mae'))} "
            f"| {num(t.get('constant_mae'), 1)} |")
    constant = res["runs"][0]["constant_mae"] if res["runs"] else None
    budget = res["budget"]
    precision = ", ".join(sorted({str(r.get("precision")) for r in res["runs"] if r.get("precision")})) or "not recorded"
    below = [f"`{r['name']}`" for r in res["runs"] if r["target_mae_vs_constant"] < 1]
    below_transfer = [f"`{r['name']}`" for r in res["runs"]
                      if r.get("transfer_alpaca", {}).get("target_mae") is not None
                      and r["transfer_alpaca"]["target_mae"] < r["transfer_alpaca"]["constant_mae"]]
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; training precision: {precision}.  ",
           *([f"Seeds fitted on: {seed_cpus}.  "] if (seed_cpus := cpus_of([p for r in res["runs"] for p in r.get("per_seed", [])
                                                                             if p.get("machine")])) else []),
           f"Every config in `configs/gsm8k/` with one budget: {budget['encoder']}, {budget['epochs']} epoch(s), batch "
           f"{budget['batch_size']}, max_length {budget['max_length']}, seeds "
           f"{', '.join(map(str, res.get('seeds') or [budget.get('seed', 42)]))}, gsm8k train rows "
           f"{budget.get('train_rows', 'all')} (a seeded share of them held out for validation), "
           + (f"bottom {budget['freeze_layers']} encoder layers frozen" if budget.get("freeze_layers")
              else "encoder layers as each config sets (all trained; word embeddings frozen except in `markers_quantile`; `mlp_head_frozen` freezes 5 of 6 layers)")
           + f"; test rows {budget.get('test_rows', 'all')}, "
           f"alpaca_eval rows {budget.get('transfer_rows', 'all')}; target = answer words; constant predictor (train "
           f"median) on the gsm8k test rows: MAE {num(constant, 2)} words."
           + "".join(f" Not run: `{k}` ({v})." for k, v in res.get("skipped", {}).items()), "",
           "Figures are means over the seeds; `± x` is half the seed range (max - min) where there are several.", "",
           "| config | module | bins | seeds | accuracy | macro-F1 | worst bin F1 | MAE in bins | QWK | Spearman (count) "
           "| target MAE (words) | / constant | train s | alpaca: accuracy | alpaca: target MAE | alpaca: constant MAE |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
           *gsm8k_verdicts(res["runs"]),
           f"Below the constant predictor on gsm8k (/ constant < 1): {', '.join(below) or 'none'}. "
           f"On alpaca_eval (target MAE below its constant MAE): {', '.join(below_transfer) or 'none'}.", "",
           "The labellings themselves, fitted on the training split (`binning.json` of each run):", "",
           "| config | train bin sizes | balance (1 = equal) | silhouette | train rows removed as outliers |",
           "|---|---|---|---|---|",
           *[f"| `{r['name']}` | {r['train_bin_sizes']} | {num(r['balance'], 3)} | {num(r['silhouette'], 3)} "
             f"| {r['outliers_removed']} |" for r in res["runs"]],
           ""]
    return "\n".join(out)


def beyond_spread(a: Res, b: Res, key: str = "target_mae") -> bool | None:
    """Whether two runs' mean ``key`` differ by more than the larger of their seed ranges (max - min), the test this
    file uses for every "A beats B" over seeds; None when either has fewer than 2 seeds."""
    counts = [len(a.get("seeds", [])), len(b.get("seeds", []))]
    if min(counts) < 2:
        return None
    return beyond_seed_range(a[key] - b[key], [a["spread"][key], b["spread"][key]], counts)


def gsm8k_verdicts(runs: list[Res]) -> list[str]:
    """The study's questions answered from the table: regressors/ordinal against bins, k-means, the constant."""
    if not runs:
        return []
    numeric = [r for r in runs if r["module"] in ("EncoderRegressor", "OrdinalRegressor")]
    bins = [r for r in runs if r["module"] not in ("EncoderRegressor", "OrdinalRegressor")]
    out = []
    if numeric and bins:
        best_n, best_b = min(numeric, key=lambda r: r["target_mae"]), min(bins, key=lambda r: r["target_mae"])
        beaten = [r for r in numeric if r["target_mae"] < best_b["target_mae"]]
        sure = beyond_spread(best_n, best_b)
        verdict = {True: "more than the larger seed range", False: "**not** more than the larger seed range",
                   None: "undecided (fewer than 2 seeds)"}[sure]
        out.append(f"Regressors and ordinal heads against classifiers over bins (target MAE): the best of them, "
                   f"`{best_n['name']}` {num(best_n['target_mae'], 2)} words, against the best classifier, "
                   f"`{best_b['name']}` {num(best_b['target_mae'], 2)}: {verdict}; "
                   f"{len(beaten)} of {len(numeric)} regressor/ordinal configs beat every classifier over bins.")
    kmeans = [r for r in runs if r["scheme"] == "kmeans"]
    if kmeans:
        out.append("k-means labellings: " + "; ".join(
            f"`{r['name']}` silhouette {num(r['silhouette'], 3)}, Spearman with the count "
            f"{num(r.get('target_spearman'), 2)}, target MAE / constant {num(r['target_mae_vs_constant'], 3)}"
            for r in kmeans) + ".")
    return [*(line + "  " for line in out[:-1]), *out[-1:], ""] if out else []


def rows_gsm8k_lengths(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    if not res["runs"]:
        return []
    best = min(res["runs"], key=lambda r: r["target_mae_vs_constant"])
    below = sum(r["target_mae_vs_constant"] < 1 for r in res["runs"])
    return [Row("gsm8k answer length: the best labelling's target MAE relative to the constant predictor", "none set",
                f"{num(best['target_mae_vs_constant'], 3)} (`{best['name']}`); {below} of {len(res['runs'])} configs below 1",
                [], res["date"], cpu_of(res))]


# ---------------------------------------------------------------------------------------------------- decoders


def pct_or_dash(value: Any) -> str:
    return "–" if value is None else pct(value)


def is_collapsed(r: dict[str, Any]) -> bool:
    share = r.get("top_prediction_share")
    return share is not None and share > COLLAPSED_SHARE


def first_field(decoding: dict[str, Any]) -> dict[str, Any]:
    """A generative decoding's record of its first label field (worst-class F1, answer share); {} when it has none."""
    return next(iter((decoding.get("fields") or {}).values()), {})


def decoder_routes(res: Res) -> list[tuple[str, dict[str, Any], dict[str, Any], str]]:
    """Every route of a decoder_classifiers results file: (label, first-field figures, first field's own record
    (worst-class F1, answer share), inference speed text)."""
    routes = []
    for key, label in (("label_scoring", "LoRA generative, label scoring (constrained-decoding normalisation)"),
                       ("label_scoring_vocab", "LoRA generative, label scoring (full-vocabulary normalisation)"),
                       ("free_generation", "LoRA generative, free generation"),
                       ("prefix_label_scoring", "prefix tuning, label scoring")):
        if key in res:
            r = res[key]
            routes.append((label, r, first_field(r), num(r["examples_per_s"], 2)))
    if "seqcls_lora" in res:
        r = res["seqcls_lora"]
        routes.append(("LoRA sequence classification", r, r, num(r["examples_per_s"], 2)))
    probe = res.get("linear_probe", {}).get("category")
    if probe:
        speed = f"{num(probe['extraction']['test']['examples_per_s'], 2)} (feature extraction)"
        for head, r in probe["heads"].items():
            routes.append((f"linear probe ({head}, layer {probe['layer']}, {probe['pooling']} pooling)", r, r, speed))
    return routes


def render_decoder_benchmark(runs: list[Res], ctx: Res) -> str:
    """Decoder LMs as classifiers (benchmarks/decoder_classifiers.py): probe vs LoRA generative vs LoRA seq-cls."""
    res = runs[-1]
    sub = res["subset"]
    counts = sub["test"].get("category_counts") or {}
    majority = max(counts, key=counts.get) if counts else None
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; torch threads {res['settings'].get('threads', 'not recorded')}; "
           f"model `{res['model']}`.  ",
           f"Stratified subset: {sub['train']['rows']} of {sub['train']['of']} train and {sub['test']['rows']} of "
           f"{sub['test']['of']} test texts, text cut to {res['settings']['max_length']} tokens, "
           f"{res['settings'].get('epochs', 1)} epoch(s) for the fine-tuned routes "
           f"(lr {res['settings']['lr']}, batch {res['settings']['batch_size']}).", ""]
    if res.get("complete") is False:
        parts = res["settings"].get("parts") or []
        done = [part for part in parts if ROUTE_KEYS.get(part) in res]
        out += [f"**Partial run**: routes finished {', '.join(done) or 'none'} of {', '.join(parts)}; the rest was "
                "interrupted (the same command resumes it, from its last epoch checkpoint).", ""]
    if majority is not None:
        out += [f"Majority category of the test subset: `{majority}`, {pct(counts[majority] / sum(counts.values()))} of the "
                "texts (the accuracy of always answering it).", ""]
    out += ["| route | category accuracy | category macro-F1 | worst-class F1 | parse failures | hallucinations | "
            "most frequent answer | examples/s (inference) |", "|---|---|---|---|---|---|---|---|"]
    for label, r, first, speed in decoder_routes(res):
        out.append(f"| {label} | {pct(r['accuracy'])} | {pct(r['f1_macro'])} | {pct_or_dash(first.get('worst_class_f1'))} | "
                   f"{pct_or_dash(r.get('parse_failure_rate'))} | {pct_or_dash(r.get('hallucination_rate'))} | "
                   f"{share_text(first.get('top_prediction_share'))} | {speed} |")
    out += ["", f"A route whose most frequent answer covers more than {pct(COLLAPSED_SHARE)} of the test texts is "
            "flagged collapsed and meets no target.", ""]
    gen_keys = [k for k in ("label_scoring", "free_generation", "prefix_label_scoring") if k in res]
    fields = sorted({f for k in gen_keys for f in res[k]["fields"]})
    if fields:
        names = {"label_scoring": "LoRA label scoring", "free_generation": "LoRA free generation",
                 "prefix_label_scoring": "prefix tuning, label scoring"}
        out += ["Per field (generative: accuracy / macro-F1 / worst-class F1 / parse failures / hallucinations; probe: "
                "accuracy / macro-F1 / worst-class F1):", "",
                "| field | " + " | ".join(names[k] for k in gen_keys) + " | probe (logreg) |",
                "|---|" + "---|" * (len(gen_keys) + 1)]
        for f in fields:
            cells = []
            for k in gen_keys:
                r = res[k]["fields"].get(f)
                cells.append("–" if r is None else f"{pct(r['accuracy'])} / {pct(r['f1_macro'])} / "
                             f"{pct_or_dash(r.get('worst_class_f1'))} / {pct(r['parse_failure_rate'])} / "
                             f"{pct(r['hallucination_rate'])}" + (" **collapsed**" if is_collapsed(r) else ""))
            pr = res.get("linear_probe", {}).get(f, {}).get("heads", {}).get("logreg")
            cells.append("–" if pr is None else f"{pct(pr['accuracy'])} / {pct(pr['f1_macro'])} / "
                         f"{pct_or_dash(pr.get('worst_class_f1'))}" + (" **collapsed**" if is_collapsed(pr) else ""))
            out.append(f"| {f} | " + " | ".join(cells) + " |")
        out.append("")
    if "target" in res:
        out += [f"Target: {res['target']['definition'].replace('>=', '≥')}.", "",
                "| label scoring | speed-up over free generation | first-field accuracy difference | met |", "|---|---|---|---|"]
        for key, what in (("target", "constrained-decoding normalisation (default)"),
                          ("target_vocab", "full-vocabulary normalisation")):
            if key in res:
                t = res[key]
                collapsed = collapsed_decodings(res, key)
                met = yes_no(bool(t["met"]) and not collapsed) + (f" (collapsed: {', '.join(collapsed)})" if collapsed else "")
                out.append(f"| {what} | {t['speedup']}x | {100 * t['accuracy_delta']:+.2f} pt | {met} |")
        out.append("")
    path = res.get("generative_lora", {}).get("label_scoring_path")
    if path:
        out += [f"Label scoring path: {path}.", ""]
    if res.get("speed_note"):
        out += [res["speed_note"], ""]
    if res.get("trained_by"):
        out += [f"The probe, the sequence classifier and the LoRA adapter come from `{res['trained_by']}`; the command "
                "above re-evaluated the saved adapter.", ""]
    return "\n".join(out)


def rows_decoder(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    data = {"endava_tickets": "Endava tickets", "online_shopping": "online_shopping_10_cats"}.get(res["benchmark"], res["benchmark"])
    rows = []
    for key, what in (("target", "default, constrained-decoding normalisation"), ("target_vocab", "full-vocabulary normalisation")):
        t = res.get(key)
        if t:
            target = t["definition"].replace("label scoring ", "", 1).replace(">=", "≥")
            collapsed = collapsed_decodings(res, key)
            flag = f"; collapsed or share not recorded: {', '.join(collapsed)}" if collapsed else ""
            rows.append(Row(f"{data}, `{res['model']}`: label scoring ({what}) vs free generation", target,
                            f"{t['speedup']}x, accuracy {100 * t['accuracy_delta']:+.2f} pt{flag}",
                            [bool(t["met"]) and not collapsed], res["date"], cpu_of(res), key))
    vs_probe = generative_vs_probe(res)
    if vs_probe is not None:
        rows.append(Row(f"{data}, `{res['model']}`: LoRA generative (label scoring) against the best linear probe",
                        "first-field accuracy within 2 pt of the best probe's, macro-F1 not below it, not collapsed",
                        vs_probe[0], [vs_probe[1]], res["date"], cpu_of(res), "generative_vs_probe"))
    return rows


def generative_vs_probe(res: Res) -> tuple[str, bool] | None:
    """Issue 15's accuracy target for the generative route: (measured text, met), None without both routes."""
    scoring = res.get("label_scoring")
    heads = (res.get("linear_probe", {}).get("category") or {}).get("heads") or {}
    if not scoring or not heads:
        return None
    head, best = max(heads.items(), key=lambda kv: (kv[1]["accuracy"], kv[1]["f1_macro"]))
    share = first_field(scoring).get("top_prediction_share")
    collapsed = share is None or share > COLLAPSED_SHARE
    met = scoring["accuracy"] >= best["accuracy"] - 0.02 and scoring["f1_macro"] >= best["f1_macro"] and not collapsed
    flag = ("; share not recorded" if share is None else f"; answers {share_text(share)}") if collapsed else ""
    return (f"accuracy {pct(scoring['accuracy'])} vs {pct(best['accuracy'])} (probe {head}), macro-F1 "
            f"{pct(scoring['f1_macro'])} vs {pct(best['f1_macro'])}{flag}", bool(met))


def collapsed_decodings(res: Res, target_key: str) -> list[str]:
    """The decodings a speed target compares whose first-field answers take one value for more than 90% of the
    test texts (or whose share was not recorded): such a target is never met, equal accuracy being the trivial kind."""
    scoring = "label_scoring_vocab" if target_key == "target_vocab" else "label_scoring"
    out = []
    for key, name in ((scoring, "label scoring"), ("free_generation", "free generation")):
        share = first_field(res.get(key) or {}).get("top_prediction_share")
        if share is None or share > COLLAPSED_SHARE:
            out.append(f"{name} {'share not recorded' if share is None else pct(share)}")
    return out


# ---------------------------------------------------------------------------------------------------- Chinese encoders


ZH_DATASETS = {"tnews": "DataCLUE TNEWS (15 topics, noisy train labels, clean test)",
               "online_shopping": "online_shopping_10_cats (category)"}
ZH_ROUTES = {"e5/ce": "e5-small, cross-entropy", "e5/focal_ls": "e5-small, focal γ2 + label smoothing 0.1",
             "e5/invlog_weights": "e5-small, inverse-log class weights", "e5/staged_unfreezing": "e5-small, staged unfreezing",
             "e5/logit_adjusted": "e5-small, logit-adjusted CE (τ 1)",
             "e5/logit_adjusted_ls": "e5-small, logit-adjusted CE (τ 1) + label smoothing 0.1",
             "gemma/probe": "gemma-3-270m, linear probe (layer 0.5, logreg)",
             "gemma/lora_seqcls": "gemma-3-270m, LoRA sequence classification"}


def _mean_spread(stat: Any, fmt: Callable[[Any], str]) -> str:
    if not isinstance(stat, dict):
        return fmt(stat)
    if stat.get("mean") is None:
        return "–"
    if stat.get("n", 1) < 2:
        return fmt(stat["mean"])
    return f"{fmt(stat['mean'])} ({fmt(stat['min'])}–{fmt(stat['max'])})"


def zh_cpus(res: Res, dataset: str | None = None) -> str:
    """The CPUs the cells (of one dataset, or all) ran on (each cell records its own; older cells only the file's
    machine)."""
    seen = [cpu_of({"cpu": c["cpu"]}) if isinstance(c.get("cpu"), dict) else cpu_of(res)
            for name, d in res["cells"].items() if dataset in (None, name) for c in d.values()]
    return "; ".join(dict.fromkeys(seen)) or cpu_of(res)


def render_chinese_encoders(runs: list[Res], ctx: Res) -> str:
    """benchmarks/chinese_encoders.py: e5-small recipes (mean, min–max over seeds) against the gemma routes."""
    res = runs[-1]
    out = ["Commands:", ""] + [f"    {c}" for c in res.get("commands", [])] + [
        "", f"Dates: {', '.join(sorted({c['date'] for d in res['cells'].values() for c in d.values()}))}; "
            f"CPU: {zh_cpus(res)}.  ",
        "Encoder rows: mean over seeds with (min–max); `seeds` says how many ran. Training samples/s: training texts "
        "x epochs over the train-loop seconds (probe: training texts over feature extraction + head fit). "
        "ms/text: median over test texts one at a time, tokenisation included, torch fp32, 2 threads.", ""]
    budget = res.get("budget", {})
    for dataset, block in res["summary"].items():
        b = budget.get(dataset, {})
        out += [f"**{ZH_DATASETS.get(dataset, dataset)}**: {b.get('train')} train, {b.get('validation')} validation, "
                f"{b.get('test')} test texts" + (f" (drawn from {b['of']['train']} / {b['of']['test']})" if "of" in b else "")
                + f"; encoder {budget.get('encoder_epochs')} epochs, LoRA seq-cls {budget.get('gemma_lora_seqcls_epochs')}.", "",
                "| route | seeds | accuracy | macro-F1 | worst-class F1 | train samples/s | wall s | ms/text | CPU, precision |",
                "|---|---|---|---|---|---|---|---|---|"]
        for route, r in block["table"].items():
            seeds = r.get("seeds", "–")
            out.append(f"| {ZH_ROUTES.get(route, route)} | {seeds} | {_mean_spread(r['accuracy'], pct)} | "
                       f"{_mean_spread(r['f1_macro'], pct)} | {_mean_spread(r['worst_class_f1'], pct)} | "
                       f"{_mean_spread(r['train_samples_per_s'], num)} | {_mean_spread(r['cell_wall_seconds'], lambda x: num(x, 0))} | "
                       f"{_mean_spread(r['inference_ms_per_text'], num)} | {'; '.join(r.get('machines', [])) or '–'} |")
        checks = block["checks"]
        fl = checks.get("focal_ls_vs_ce")
        if fl:
            out += ["", f"Focal + label smoothing against CE: {fl['f1_macro_gain_points']:+.2f} macro-F1 points, the larger "
                    f"seed spread (max - min) {fl['larger_seed_spread_points']:.2f} points: "
                    + {True: "**beats CE by more than the seed spread**", False: "**not more than the seed spread**",
                       None: "**undecided** (a recipe with one seed has no spread)"}[fl["beats_ce_by_more_than_spread"]]
                    + f" (seeds: CE {fl['seeds'][0]}, focal + LS {fl['seeds'][1]})."]
        out.append("")
    if res.get("published_tnews_f1_macro"):
        out += ["Published TNEWS (DataCLUE) macro-F1: " + "; ".join(f"{k} {v}" for k, v in res["published_tnews_f1_macro"].items())
                + ".", ""]
    return "\n".join(out)


def rows_chinese_encoders(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    rows = []
    date = max(c["date"] for d in res["cells"].values() for c in d.values())
    for dataset, block in res["summary"].items():
        checks = block["checks"]
        name = {"tnews": "TNEWS", "online_shopping": "online_shopping"}.get(dataset, dataset)
        t = checks.get("target_f1_macro_58")
        if t:
            best = ZH_ROUTES.get(checks["best_recipe"], checks["best_recipe"])
            rows.append(Row(f"{name}: best e5-small recipe macro-F1, 3-seed mean", "≥ 58.0",
                            f"{100 * t['measured']:.2f} ({best}, {checks['best_recipe_seeds']} seed{'' if checks['best_recipe_seeds'] == 1 else 's'})", [bool(t["met"])],
                            date, zh_cpus(res, dataset), "target_f1_macro_58"))
        g = checks.get("beats_gemma")
        if g:
            margins = ", ".join(f"{k.split('/')[1]} {v:+.2f}" for k, v in g["f1_margin_points"].items())
            speeds = ", ".join(f"{k.split('/')[1]} {v}x" for k, v in g["train_speed_ratio"].items())
            rows.append(Row(f"{name}: best e5 recipe against every gemma-3-270m route", "≥ 3 macro-F1 points at ≥ 5x training samples/s",
                            f"{margins} points; {speeds}" + ("" if len(g["routes_run"]) == 2 else " (not every route run)")
                            + ("" if g.get("same_cpu", True) else " (cells on different CPUs: speed not comparable)"),
                            [bool(g["met"])], date, zh_cpus(res, dataset), f"beats_gemma_{dataset}"))
    return rows


# ---------------------------------------------------------------------------------------------------- calibration / OOS


def render_clinc150_oos(runs: list[Res], ctx: Res) -> str:
    res = runs[-1]
    results = res["results"]
    chosen = results.get("bundle_default_threshold", {}).get("chosen_by", {})
    chosen_text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in chosen.items()) or "the export's default rule"
    labels = {"uncalibrated": "max-softmax, T = 1, threshold tuned on validation",
              "calibrated": f"max-softmax, T = {results['calibrated']['temperature']:.2f}, threshold tuned on validation",
              "bundle_default_threshold": f"bundle's own threshold ({chosen_text} on validation), calibrated"}
    rows = []
    for key, label in labels.items():
        r = results.get(key)
        if r is None:
            continue
        rows.append(f"| {label} | {num(r['threshold'], 3)} | {pct(r['in_scope_accuracy'])} | {pct(r['in_scope_accuracy_with_rejection'])} "
                    f"| {pct(r.get('in_scope_rejected'))} | {pct(r['oos_recall'])} | {num(r['oos_auroc'], 3)} | {num(r['in_scope_ece'], 3)} |")
    n = res["n"]
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; platform {res['machine']['platform']}; config `{res['config']}`; "
           f"model: {res.get('model', 'not recorded')}.  ",
           f"Validation {n['validation']} in-scope + {n['oos_validation']} OOS texts; test {n['test']} in-scope + "
           f"{n['oos_test']} OOS texts. Threshold rule: {res.get('threshold_rule', 'not recorded')}.", "",
           "| confidence | threshold | in-scope accuracy | in-scope accuracy with rejection | in-scope rejected | OOS recall "
           "| OOS AUROC | in-scope ECE |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    if res.get("published"):
        out += [f"Published reference: {res['published']}.", ""]
    parity = res.get("parity", {})
    if parity:
        out += ["Parity of the bundle on in-scope validation (against torch fp32):", "",
                "| engine | accuracy | agreement with torch | macro-F1 change (pt) |", "|---|---|---|---|"]
        for engine, p in parity.items():
            out.append(f"| {engine} | {pct(p.get('accuracy'))} | {pct(p.get('agreement_vs_torch'))} "
                       f"| {num(p.get('macro_f1_change_pt'), 2)} |")
        out.append("")
    cal = res.get("calibration_report")
    if cal:
        out += [f"Temperature fitted at export on {cal['n']} validation texts: T = {cal['temperature']:.3f}; NLL "
                f"{num(cal['nll_before'], 3)} -> {num(cal['nll_after'], 3)}, ECE ({cal['n_bins']} bins) {num(cal['ece_before'], 3)} "
                f"-> {num(cal['ece_after'], 3)}.", ""]
    return "\n".join(out)


def rows_clinc150_oos(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    r = res["results"].get("bundle_default_threshold") or res["results"]["calibrated"]
    return [Row("CLINC150 out-of-scope rejection with the calibrated INT8 bundle at its own threshold", "none set",
                f"OOS recall {pct(r['oos_recall'])}, in-scope accuracy {pct(r['in_scope_accuracy'])}, AUROC {num(r['oos_auroc'], 3)}",
                [], res["date"], cpu_of(res))]


# ---------------------------------------------------------------------------------------------------- deployment

ENGINES = {"torch_fp32": "torch fp32", "naive_ort_fp32": "naive ORT fp32", "naive_ort_int8": "naive ORT int8 (baseline)",
           "fenlei_ort_fp32": "fenlei ORT fp32 (fused)", "fenlei_ort_int8": "fenlei ORT int8 dynamic (the bundle)",
           "fenlei_ort_int8_static": "fenlei ORT int8 static QDQ"}

DEPLOY_TARGETS = (  # target key prefix, target_values key, ratios key, claim, formatter
    ("speedup_vs_torch_ge_", "speedup_vs_torch_fp32", "speedup_vs_torch_fp32_batch1_p50",
     "batch-1 p50 speed-up of the INT8 bundle over torch fp32", ratio),
    ("speedup_vs_naive_int8_ge_", "speedup_vs_naive_int8", "speedup_vs_naive_int8_batch1_p50",
     "batch-1 p50 speed-up of the INT8 bundle over the naive INT8 export", ratio),
    ("agreement_ge_", "min_agreement", "agreement_vs_torch", "argmax agreement of the INT8 bundle with torch (test split)", pct),
    ("accuracy_loss_le_", "max_accuracy_loss_pt", "accuracy_loss_pt", "test accuracy lost by the INT8 bundle",
     lambda v: f"{v:.2f} pt"),
    ("size_ratio_ge_", "min_size_ratio", "size_ratio_onnx_fp32_over_int8", "ONNX fp32 size / INT8 bundle size", ratio),
)


def target_value_text(key: str, values: dict[str, Any], tv_key: str) -> str:
    v = values.get(tv_key)
    if v is None:
        return bound(key) or "not recorded"
    if tv_key.startswith("max_"):
        return f"≤ {v} pt"
    if tv_key == "min_agreement":
        return f"≥ {100 * v:g}%"
    return f"≥ {v}x"


def deploy_target_rows(runs: list[Res]) -> list[tuple[str, str, str, list[Any], list[bool]]]:
    """Per target: (key, claim, target text, values per run, met per run)."""
    out = []
    first = runs[0]
    for prefix, tv_key, ratio_key, claim, _fmt in DEPLOY_TARGETS:
        key = next((k for k in first.get("targets", {}) if k.startswith(prefix)), None)
        if key is None:
            continue
        out.append((key, claim, target_value_text(key, first.get("target_values", {}), tv_key),
                    [r["ratios"].get(ratio_key) for r in runs], [bool(r["targets"][key]) for r in runs]))
    return out


def render_deploy_latency(runs: list[Res], ctx: Res) -> str:
    """deploy_latency.py: one section for one model's runs (a rerun measures the same bundles again)."""
    n = len(runs)
    first = runs[0]
    out = [f"Model `{first['run_dir']}`, test file `{first['test_file']}` ({first['test_n']} texts), {first['threads']} threads "
           f"for every engine. CPU: {cpus_of(runs)}; platform {first['machine']['platform']}.", "",
           "| results file | command | date | latency rounds (texts each) | naive int8 p50 ms | bundle int8 p50 ms "
           "| bundle / naive speed-up | per-round speed-up, min / median / max |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        rounds = r["ratios"].get("speedup_vs_naive_int8_per_round") or []
        per_round = spread(rounds, lambda v: f"{v:.3f}") if len(rounds) > 1 else "–"
        batch1_n = r["engines"]["fenlei_ort_int8"].get("batch1_n")
        each = f" ({batch1_n // len(rounds)})" if rounds and batch1_n else ""
        out.append(f"| `{r['benchmark']}.json` | `{r['command']}` | {r['date']} | {len(rounds) or '–'}{each} "
                   f"| {num(r['engines']['naive_ort_int8']['batch1_p50_ms'], 2)} | {num(r['engines']['fenlei_ort_int8']['batch1_p50_ms'], 2)} "
                   f"| {ratio(r['ratios']['speedup_vs_naive_int8_batch1_p50'])} | {per_round} |")
    out.append("")
    fold = f" (min / median / max over the {n} runs where they differ)" if n > 1 else ""
    out += [f"Engines{fold}:", "",
            "| engine | batch-1 p50 ms | batch-1 p95 ms | batch-32 texts/s | test accuracy | argmax agreement vs torch | size MB |",
            "|---|---|---|---|---|---|---|"]
    for key, label in ENGINES.items():
        es = [r["engines"][key] for r in runs if key in r["engines"]]
        if not es:
            continue

        def col(field: str, fmt: Callable[[Any], str], es: list[dict[str, Any]] = es) -> str:
            return spread([e.get(field) for e in es], fmt)

        out.append(f"| {label} | {col('batch1_p50_ms', lambda v: num(v, 2))} | {col('batch1_p95_ms', lambda v: num(v, 2))} "
                   f"| {col('batch32_texts_per_s', num)} | {col('test_accuracy', pct)} | {col('agreement_vs_torch', pct)} "
                   f"| {col('size_mb', num)} |")
    e2e = [r.get("predictor_end_to_end_batch1_ms") for r in runs]
    if any(v is not None for v in e2e):
        out += ["", f"`BundlePredictor.predict` end to end (tokenization included), batch 1: {spread(e2e, lambda v: num(v, 2))} ms."]
    out += ["", "| target | target value | measured" + (" (min / median / max)" if n > 1 else "") + " | met |", "|---|---|---|---|"]
    fmts = {prefix: fmt for prefix, _tv, _rk, _c, fmt in DEPLOY_TARGETS}
    for key, claim, target, values, met in deploy_target_rows(runs):
        fmt = next(f for p, f in fmts.items() if key.startswith(p))
        verdict = yes_no(met[0]) if n == 1 else f"{sum(met)} of {n} runs"
        out.append(f"| {claim} | {target} | {spread(values, fmt)} | {verdict} |")
    out.append("")
    out += render_export(first)
    serve = [r["serve"] for r in runs if r.get("serve")]
    if serve:
        startup = spread([s.get("startup_to_health_s") for s in serve], lambda v: f"{v}")
        out += [f"Service (`fenlei serve`, one text per request over loopback): ready {startup} s after process start"
                f"{fold}.", "", "| concurrency | requests | failed | requests/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
        levels = [lv["concurrency"] for lv in serve[0]["levels"]]
        for c in levels:
            lvs = [lv for s in serve for lv in s["levels"] if lv["concurrency"] == c]
            out.append(f"| {c} | {spread([lv['requests'] for lv in lvs], str)} | {sum(lv['failed'] for lv in lvs)} "
                       f"| {spread([lv['requests_per_s'] for lv in lvs], str)} | {spread([lv['p50_ms'] for lv in lvs], str)} "
                       f"| {spread([lv['p95_ms'] for lv in lvs], str)} |")
        out.append("")
    return "\n".join(out)


def render_export(res: Res) -> list[str]:
    """What the benchmark's bundle export did: fusions, CPU rewrites, quantization attempts, parity gate."""
    out = []
    opt = res.get("bundle_optimization", {})
    quant = res.get("bundle_quantization", {}).get("dynamic", {})
    exports = res.get("exports", {}).get("dynamic")
    if exports:
        out += [f"The bundle: `{exports['command']}` ({exports['seconds']} s).  "]
    if opt:
        fused = ", ".join(f"{k} {v}" for k, v in opt.get("fused_ops", {}).items()) or "none"
        rw = opt.get("cpu_rewrites", {})
        rw_text = ", ".join(f"{k.replace('_', ' ')} {yes_no(v) if isinstance(v, bool) else v}" for k, v in rw.items()
                            if k != "num_nodes")
        out += [f"Fused ops: {fused}; CPU rewrites: {rw_text or 'none'}; {opt.get('num_nodes', '–')} nodes.  "]
    if quant:
        settings = ", ".join(f"{k} {v}" for k, v in quant.items() if k in ("mode", "per_channel", "weight_type",
                                                                           "reduce_range", "keep_head_fp32",
                                                                           "keep_ffn_out_fp32", "weight_only",
                                                                           "gelu_approximated"))
        shipped = f" (export attempt {quant['shipped_attempt']})" if quant.get("shipped_attempt") else ""
        out += [f"Quantization of the bundle{shipped}: {settings}.", "", "| export attempt | settings | size MB | passed the gate | failures |",
                "|---|---|---|---|---|"]
        for i, a in enumerate(quant.get("attempts", []), 1):
            s = ", ".join(f"{k} {v}" for k, v in a.items() if k not in ("passed", "failures", "size_mb"))
            out.append(f"| {i} | {s} | {num(a.get('size_mb'))} | {yes_no(a['passed'])} | {'; '.join(a['failures']) or '–'} |")
        out.append("")
    parity = res.get("bundle_parity", {}).get("dynamic")
    if parity:
        lim = parity["limits"]
        out += [f"Parity gate of the written bundle on {parity['n']} texts ({parity['eval_source']}; limits: agreement "
                f"≥ {pct(lim['min_agreement'])}, |macro-F1 change| ≤ {lim['max_f1_change_pt']} pt; forced: "
                f"{yes_no(parity.get('forced'))}):", "", "| engine | agreement with torch | macro-F1 change (pt) |", "|---|---|---|"]
        for engine, p in parity["engines"].items():
            if "agreement_vs_torch" in p:
                out.append(f"| {engine} | {pct(p['agreement_vs_torch'])} | {p['macro_f1_change_pt']:+.2f} |")
        out.append("")
    return out


def rows_deploy_latency(runs: list[Res], ctx: Res) -> list[Row]:
    parts = runs[0]["run_dir"].rstrip("/").split("/")
    # A benchmark driver's cell folder ends in .../<dataset>/<model>/<recipe>/<seed>/run: name the cell, not "run".
    model = "/".join(parts[-5:-1]) if parts[-1] == "run" else parts[-1]
    rows = []
    fmts = {prefix: fmt for prefix, _tv, _rk, _c, fmt in DEPLOY_TARGETS}
    # A bundle written past a failed parity gate (--force) is not the model the gate vouches for: none of its
    # figures meets a target, however fast or small it is.
    forced = [bool(r.get("bundle_parity", {}).get("dynamic", {}).get("forced")) for r in runs]
    not_counted = (f" (bundle forced past a failed parity gate in {sum(forced)} of {len(runs)} runs: not counted)"
                   if any(forced) else "")
    for key, claim, target, values, met in deploy_target_rows(runs):
        fmt = next(f for p, f in fmts.items() if key.startswith(p))
        measured = spread(values, fmt)
        if len(runs) > 1 and len(set(values)) > 1:
            measured += f" (min / median / max of {len(runs)} runs)"
        measured += not_counted
        met = [m and not f for m, f in zip(met, forced, strict=True)]
        rows.append(Row(f"`{model}`: {claim}", target, measured, met, dates_of(runs), cpus_of(runs), key))
    size_key = next((k for k in runs[0].get("targets", {}) if k.startswith("int8_size_le_")), None)
    if size_key:  # --max_size_mb: the bundle's INT8 model file against an absolute bound
        bound = size_key.removeprefix("int8_size_le_").removesuffix("mb")
        sizes = [r["engines"]["fenlei_ort_int8"]["size_mb"] for r in runs]
        rows.append(Row(f"`{model}`: size of the bundle's INT8 model", f"≤ {bound} MB",
                        spread(sizes, lambda v: f"{v:.1f} MB") + not_counted,
                        [bool(r["targets"][size_key]) and not f for r, f in zip(runs, forced, strict=True)], dates_of(runs),
                        cpus_of(runs), size_key))
    return rows


def latency_ratio_rows(res: Res) -> list[tuple[str, str, float, float]]:
    """profile_onnx.py --latency_only: (label, path, p50, speed-up vs the first model) per model and thread count."""
    first = next(iter(res["p50_ms"]))
    threads_of = {k: k.rsplit("threads=", 1)[1] for k in res["p50_ms"]}
    base = {t: v for k, v in res["p50_ms"].items() for t in [threads_of[k]] if k.split(" threads=")[0] == first.split(" threads=")[0]}
    out = []
    for key, p50 in res["p50_ms"].items():
        path = key.rsplit(" threads=", 1)[0]
        out.append((f"{res['labels'].get(path, path)} (threads={threads_of[key]})", path, p50, base[threads_of[key]] / p50))
    return out


def render_latency_only(runs: list[Res], ctx: Res) -> str:
    """Batch-1 latency of several ONNX models taking turns block by block (profile_onnx.py --latency_only), folded."""
    n = len(runs)
    first = runs[0]
    out = [f"- `{r['benchmark']}.json` ({r['date']}; onnxruntime {r['onnxruntime']}; {r['n']} batch-1 requests per model "
           f"in {r['rounds']} blocks): `{r['command']}`" for r in runs]
    out += ["", f"CPU: {cpus_of(runs)}; platform {first['platform']}.", "",
            "| model | file | p50 ms | p95 ms | speed-up over the first row" + (" (per run: min / median / max)" if n > 1 else "") + " |",
            "|---|---|---|---|---|"]
    per_run = [latency_ratio_rows(r) for r in runs]
    for i, (label, path, _p50, _sp) in enumerate(per_run[0]):
        key = list(first["p50_ms"])[i]
        p50 = spread([r["p50_ms"].get(key) for r in runs], lambda v: num(v, 3))
        p95 = spread([r["p95_ms"].get(key) for r in runs], lambda v: num(v, 3))
        sp = spread([rows[i][3] for rows in per_run], lambda v: f"{v:.2f}x")
        out.append(f"| {label} | `{path}` | {p50} | {p95} | {sp} |")
    out.append("")
    return "\n".join(out)


def rows_latency_only(runs: list[Res], ctx: Res) -> list[Row]:
    per_run = [latency_ratio_rows(r) for r in runs]
    last, base = per_run[0][-1][0].split(" (")[0], per_run[0][0][0].split(" (")[0]
    measured = spread([rows[-1][3] for rows in per_run], lambda v: f"{v:.2f}x")
    if len(runs) > 1:
        measured += f" (min / median / max of {len(runs)} runs)"
    return [Row(f"INT8 export levers: `{last}` over `{base}`, batch-1 p50", "none set (diagnostic)", measured, [],
                dates_of(runs), cpus_of(runs))]


def cpus_ratio(run: Res) -> dict[str, float]:
    """int8_latency_cpus: naive / fenlei p50 per thread count."""
    out = {}
    for key, f in run["p50_ms"].items():
        if "bundle" not in key:
            continue
        t = key.rsplit("threads=", 1)[1]
        naive = next(v for k, v in run["p50_ms"].items() if "naive" in k and k.endswith(f"threads={t}"))
        out[t] = naive / f
    return out


def naive_target(ctx: Res) -> tuple[str, float | None]:
    """deploy_latency's target for the bundle against naive INT8: (its key, its value), for the same ratio elsewhere."""
    ref = ctx.get("deploy_latency", {})
    key = next((k for k in ref.get("targets", {}) if k.startswith("speedup_vs_naive_int8_ge_")), "")
    return key, ref.get("target_values", {}).get("speedup_vs_naive_int8")


def render_int8_latency_cpus(runs: list[Res], ctx: Res) -> str:
    """The bundle's INT8 model against the naive INT8 model on two CPUs (benchmarks/profile_onnx.py)."""
    res = runs[-1]
    _key, target = naive_target(ctx)
    out = [f"Command: `{res['command']}`  ",
           f"Models: fenlei = {res['models']['fenlei']}; naive = {res['models']['naive']}. Inputs: {res['inputs']}.", ""]
    out += ["| machine | CPU (model; flags) | date | onnxruntime | threads | fenlei p50 ms | naive p50 ms | naive / fenlei"
            + (f" (target ≥ {target}x, from deploy_latency)" if target else "") + " |", "|---|---|---|---|---|---|---|---|"]
    for run in res["runs"]:
        ratios = cpus_ratio(run)
        for t in sorted(ratios, key=int):
            f = next(v for k, v in run["p50_ms"].items() if "bundle" in k and k.endswith(f"threads={t}"))
            nv = next(v for k, v in run["p50_ms"].items() if "naive" in k and k.endswith(f"threads={t}"))
            out.append(f"| {run['machine'].split(':', 1)[0]} | {cpu_of(run)} | {run['date']} | {run['onnxruntime']} | {t} | {num(f, 3)} "
                       f"| {num(nv, 3)} | {ratios[t]:.2f}x |")
    out.append("")
    return "\n".join(out)


def rows_int8_latency_cpus(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    key, target = naive_target(ctx)
    rows = []
    for run in res["runs"]:
        ratios = cpus_ratio(run)
        ref_threads = str(ctx.get("deploy_latency", {}).get("threads", ""))  # judged at deploy_latency's thread count
        t = ref_threads if ref_threads in ratios else max(ratios, key=int)
        measured = ", ".join(f"{ratios[k]:.2f}x at {k} thread{'s' if k != '1' else ''}" for k in sorted(ratios, key=int))
        name = run["machine"].split(":", 1)[0]
        rows.append(Row(f"INT8 bundle (before the CPU rewrites) over naive INT8, batch-1 p50 at {t} threads, {name}",
                        f"≥ {target}x (deploy_latency's)" if target else "none set", measured,
                        [ratios[t] >= target] if target else [], run["date"], cpu_of(run), key))
    return rows


def render_int8_options(runs: list[Res], ctx: Res) -> str:
    """Dynamic INT8 settings vs the parity gate (benchmarks/int8_options.py)."""
    res = runs[-1]
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; {res['threads']} threads; model `{res['run_dir']}`; {res['eval_n']} "
           f"held-out texts ({res['eval_source']}); reference: {res['reference']}; latency over {res['latency_n']} batch-1 "
           "requests per variant.", "",
           "| variant | kept fp32 | size MB | batch-1 p50 ms | agreement b32 / b1 | macro-F1 change b32 / b1 (pt) | passes gate |",
           "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if name == "fp32":
            out.append(f"| fp32 (fused) | all | {num(v['size_mb'])} | {num(v['batch1_p50_ms'], 2)} | – | – | – |")
            continue
        out.append(f"| `{name}` | {', '.join(v['kept_fp32']) or '–'} ({v['nodes_kept_fp32']} nodes) | {num(v['size_mb'])} | "
                   f"{num(v['batch1_p50_ms'], 2)} | {pct(v['batch32']['agreement'])} / {pct(v['batch1']['agreement'])} | "
                   f"{v['batch32']['macro_f1_change_pt']:+.2f} / {v['batch1']['macro_f1_change_pt']:+.2f} | "
                   f"{yes_no(v['passes_default_gate'])} |")
    limits = ctx.get("deploy_latency", {}).get("bundle_parity", {}).get("dynamic", {}).get("limits")
    if limits:
        out += ["", f"The gate (the export's defaults, as recorded in deploy_latency.json): agreement ≥ {pct(limits['min_agreement'])} "
                f"and |macro-F1 change| ≤ {limits['max_f1_change_pt']} pt, at both batch sizes."]
    out.append("")
    return "\n".join(out)


def rows_int8_options(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    variants = {k: v for k, v in res["variants"].items() if k != "fp32"}
    passing = {k: v for k, v in variants.items() if v["passes_default_gate"]}
    smallest = min(passing, key=lambda k: passing[k]["size_mb"]) if passing else None
    measured = f"{len(passing)} of {len(variants)} variants pass"
    if smallest:
        measured += f"; smallest passing: `{smallest}`, {num(passing[smallest]['size_mb'])} MB"
    return [Row(f"dynamic INT8 settings passing the parity gate, `{res['run_dir']}` ({res['benchmark']})", "none set (study)",
                measured, [], res["date"], cpu_of(res))]


def render_kernel_costs(runs: list[Res], ctx: Res) -> str:
    """Per-op cost of the kernels the CPU rewrites swap (benchmarks/kernel_costs.py)."""
    res = runs[-1]
    threads = list(res["us_per_op"])
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; onnxruntime {res['onnxruntime']}; a chain of {res['chain']} "
           f"ops on {res['tokens']} tokens, median of {res['runs']} runs, per op.", "",
           "| kernel(s) | " + " | ".join(f"us, {t}" for t in threads) + " |", "|---|" + "---|" * len(threads)]
    for name in res["us_per_op"][threads[0]]:
        out.append(f"| {name} | " + " | ".join(num(res["us_per_op"][t][name], 1) for t in threads) + " |")
    out.append("")
    return "\n".join(out)


def rows_kernel_costs(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    threads = list(res["us_per_op"])
    names = list(res["us_per_op"][threads[0]])
    fused, rewrite = names[0], next((n for n in names if "folded" in n), names[1] if len(names) > 1 else names[0])
    measured = "; ".join(f"{t}: {num(res['us_per_op'][t][fused], 1)} -> {num(res['us_per_op'][t][rewrite], 1)} us" for t in threads)
    return [Row(f"per-op cost, {fused} -> {rewrite}", "none set (diagnostic)", measured, [], res["date"], cpu_of(res))]


def render_probe_layer_sweep(runs: list[Res], ctx: Res) -> str:
    """benchmarks/probe_layer_sweep.py: the probe's features of several layers from one forward against one per layer."""
    res = runs[-1]
    n = res["texts"]
    diff = res["max_abs_feature_difference"]
    same = "identical" if diff == 0.0 else f"NOT identical (largest difference {diff:.2e})"
    return "\n".join([
        f"Command: `{res['command']}`  ",
        f"Date: {res['date']}; CPU: {cpu_of(res)}; {res['torch_threads']} torch threads.  ",
        f"`{res['model']}` on the first {n} texts of `{res.get('data', 'banking77 train')}`, max_length "
        f"{res['max_length']}, batch {res['batch_size']}, layers {', '.join(map(str, res['layers']))}; extraction only, "
        f"the same loaded model, median of {res['rounds']} alternating rounds.", "",
        "| route | seconds | texts/s |", "|---|---|---|",
        f"| one forward pass, every layer (`fenlei probe --layers`) | {num(res['one_pass_seconds'], 2)} | "
        f"{num(res['one_pass_texts_per_s'], 1)} |",
        f"| one pass per layer (a `fenlei probe --layer` run each) | {num(res['per_layer_seconds'], 2)} | "
        f"{num(res['per_layer_texts_per_s'], 1)} |", "",
        f"Speed-up {num(res['speedup'], 2)}x; the features of the two routes are {same}.", ""])


def rows_probe_layer_sweep(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    return [Row(f"probe features of {len(res['layers'])} layers: one forward against one per layer", "none set (study)",
                f"{num(res['speedup'], 2)}x faster", [], res["date"], cpu_of(res))]


def _server_of(st: Res) -> str:
    """A setting's server side: workers x sessions x intra-op threads, and the batching limits (/metadata)."""
    sv = st.get("server")
    if not sv:
        return "–"
    threads = "ORT default" if sv.get("threads") is None else str(sv["threads"])
    return (f"{sv.get('workers', 1)} x {sv.get('max_concurrent')} x {threads}; batch ≤ {sv.get('max_batch_texts')} texts, "
            f"wait {num(sv.get('batch_wait_ms'), 1)} ms")


def render_serve_load(runs: list[Res], ctx: Res) -> str:
    """benchmarks/serve_load.py: the service under load per server setting and concurrency, then the faults."""
    out = []
    for r in runs:
        rounds = r.get("rounds", 1)
        each = f", measured in {rounds} rounds in turn (requests/s of each round in brackets)" if rounds > 1 else ""
        out += [f"Bundle `{r['bundle']}`, texts `{r['texts']}`; {r['requests_per_level']} single-text requests per "
                f"level and round after {r['warmup']} unmeasured ones{each}, over keep-alive connections from a client "
                f"in its own process on the same machine ({r.get('client', 'asyncio')}). CPU: {cpu_of(r)}; "
                f"{r['date']}; `{r['command']}`.", "",
                "| setting | server: workers x sessions x threads; batching | concurrency | requests/s | p50 ms "
                "| p95 ms | p99 ms | failed | texts per ORT call | labels as unbatched c1 |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for st in r["settings"]:
            for lv in st["levels"]:
                rps = num(lv["requests_per_s"])
                if len(lv.get("requests_per_s_rounds") or []) > 1:
                    rps += " (" + ", ".join(num(x) for x in lv["requests_per_s_rounds"]) + ")"
                out.append(f"| {st['setting']} | {_server_of(st)} | {lv['concurrency']} | {rps} | {num(lv['p50_ms'], 2)} "
                           f"| {num(lv['p95_ms'], 2)} | {num(lv['p99_ms'], 2)} | {lv['failed']} "
                           f"| {num(lv.get('texts_per_call'), 2)} | {pct(lv.get('label_agreement_vs_unbatched_c1'))} |")
        if r.get("model_alone"):
            out += ["", "The model alone (onnxruntime in the benchmark's process, no HTTP; batches cut from the same "
                    "texts, median of 3 passes): what sharing calls can buy is bounded by how a text's cost falls "
                    "with the batch.", "", "| intra-op threads | texts per call | ms per call | ms per text | texts/s |",
                    "|---|---|---|---|---|"]
            out += [f"| {'ORT default' if m['threads'] is None else m['threads']} | {m['batch']} | "
                    f"{num(m['ms_per_call'], 2)} | {num(m['ms_per_text'], 2)} | {num(m['texts_per_s'])} |"
                    for m in r["model_alone"]]
        top = max(r["levels"])
        out += ["", "Server commands: " + "; ".join(f"{st['setting']}: `{st['command']}`" for st in r["settings"]) + ".",
                "", f"requests/s at concurrency {top} over concurrency 1, same setting: "
                + ", ".join(f"{st['setting']} {ratio(st['ratio_top_over_c1'])}" for st in r["settings"])
                + f" (target ≥ 3x for a batched setting; best: {r['best_setting']}"
                + (f"; most requests/s at concurrency {top}: {r['fastest_setting_at_top']}" if r.get("fastest_setting_at_top") else "")
                + ").", ""]
        if r.get("faults"):
            out += ["| fault | expected | observed | ok |", "|---|---|---|---|"]
            out += [f"| {f['case']} | {f['expected']} | {f['observed']} | {yes_no(f['ok'])} |" for f in r["faults"]]
            out.append("")
    return "\n".join(out)


def rows_serve_load(runs: list[Res], ctx: Res) -> list[Row]:
    rows = []
    for r in runs:
        top = max(r["levels"])
        key = next(k for k in r["targets"] if k.startswith(f"c{top}_over_c1"))
        # The test fixture's model is tiny (a call's fixed cost dominates): its ratio checks the plumbing and does
        # not count for the 3x target, which a real bundle's row judges.
        fixture = "tests/fixtures/" in str(r["bundle"])
        rows.append(Row(f"`{r['bundle']}` service: requests/s at concurrency {top} over 1 ({r['best_setting']})",
                        "none set (tiny fixture model; ≥ 3x is judged on a real bundle)" if fixture else "≥ 3x",
                        ratio(r["target_values"][key]), [] if fixture else [bool(r["targets"][key])], r["date"],
                        cpu_of(r), key))
        rows.append(Row(f"`{r['bundle']}` service: failed requests under load, all settings", "0",
                        str(sum(st["failed"] for st in r["settings"])), [bool(r["targets"]["zero_failures"])],
                        r["date"], cpu_of(r), "zero_failures"))
    return rows


def render_sweep_search(runs: list[Res], ctx: Res) -> str:
    """benchmarks/sweep_search.py: bayes + hyperband pruning against random search, same trial count and seed."""
    res = runs[-1]
    s = res["summary"]
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; {res['count']} trials per sweep, seed {res['seed']}, the "
           f"quickstart config and data ({res['max_epochs']} epochs a trial), W&B off, every trial a child process.", "",
           "| sweep | best val/f1_macro_best | trials (status) | epochs run | wall s |", "|---|---|---|---|---|"]
    for name, arm in res["arms"].items():
        statuses = ", ".join(f"{n} {k}" for k, n in arm["statuses"].items())
        out.append(f"| {name} | {num(arm['best'], 4)} | {statuses} | {arm['epochs_run']} | {num(arm['wall_seconds'], 0)} |")
    out += ["", f"- Best macro-F1, bayes+hyperband minus random: {s['best_delta_points']:+.2f} points "
            f"({'bayes ahead' if s['bayes_beats_random'] else 'bayes not ahead'} at this count).",
            f"- Pruning: {s['epochs_not_run']} of {s['epochs_planned']} epochs not run; at the random sweep's mean epoch "
            f"time of {s['mean_epoch_seconds']} s, about {s['pruning_saved_seconds_estimate']} s of training.",
            f"- Whole sweeps: {num(s['wall_bayes_seconds'], 0)} s against {num(s['wall_random_seconds'], 0)} s "
            f"(ratio {s['wall_ratio_bayes_over_random']}), start-up of every trial included.", "",
            "| sweep | trial | status | val/f1_macro_best | epochs | lr | head_lr | label_smoothing |",
            "|---|---|---|---|---|---|---|---|"]
    for name, arm in res["arms"].items():
        for t in arm["trials"]:
            p = t["params"]
            value = num(t["value"], 4) if t["value"] is not None else (
                f"({num(t['value_at_stop'], 4)} at stop)" if t.get("value_at_stop") is not None else "–")
            out.append(f"| {name} | {t['trial']} | {t['status']} | {value} | {t['epochs']} | "
                       f"{p['model.init_args.lr']:.3g} | {p['model.init_args.head_lr']:.3g} | "
                       f"{p['model.init_args.loss.init_args.label_smoothing']:.3f} |")
    out.append("")
    return "\n".join(out)


def rows_sweep_search(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    s = res["summary"]
    return [Row(f"bayes + hyperband against random search ({res['count']} trials each): best macro-F1, epochs run",
                "none set (comparison)", f"{s['best_delta_points']:+.2f} points; {s['epochs_run_bayes']} of "
                f"{s['epochs_planned']} epochs; wall {s['wall_ratio_bayes_over_random']}x", [], res["date"], cpu_of(res),
                "bayes_vs_random")]


def render_hostile_requests(runs: list[Res], ctx: Res) -> str:
    """benchmarks/hostile_requests.py: abusive requests against ``fenlei serve``, expected and observed."""
    res = runs[-1]
    opts = res.get("options", {})
    out = [f"Command: `{res.get('command', 'python benchmarks/hostile_requests.py (command not recorded)')}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; target: {res['target']}; big text {opts.get('big_mb')} MB, "
           f"{opts.get('texts_millions')} million texts in the chunked body, {opts.get('concurrent')} concurrent clients.", "",
           "| case | expected | observed | as expected | seconds |", "|---|---|---|---|---|"]
    for r in res["rows"]:
        cells = [str(r[k]).replace("|", "\\|").replace("\n", " ") for k in ("case", "expected", "observed")]
        out.append(f"| {' | '.join(cells)} | {yes_no(r['ok'])} | {num(r.get('seconds'), 2)} |")
    out.append("")
    return "\n".join(out)


def rows_hostile_requests(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    ok = sum(bool(r["ok"]) for r in res["rows"])
    return [Row("hostile requests against `fenlei serve` (loopback): cases that behave as expected", "all of them",
                f"{ok} of {len(res['rows'])}", [bool(res["passed"])], res["date"], cpu_of(res), "all_cases_as_expected")]


# ---------------------------------------------------------------------------------------------------- data tools


def render_label_noise(runs: list[Res], ctx: Res) -> str:
    """benchmarks/label_noise.py: ``fenlei data noise`` against injected flips, and on DataCLUE TNEWS."""
    res = runs[-1]
    b, t = res["banking77"], res["tnews"]
    out = [f"Command: `{res['command']}`  ", f"Date: {res['date']}; CPU: {cpu_of(res)}.  ",
           f"Detector: {res['detector']}; {b['folds']} folds.", "",
           f"**Banking77, {b['rate']:.0%} of the {b['rows']:,} train labels flipped** to another of the "
           f"{b['classes']} classes (uniform, seeded); flagged rows against the flipped ones:", "",
           "| noise seed | flipped | flagged | precision | recall | F1 | precision of the first N (N = flipped) | "
           "suggested = original | out-of-fold accuracy | s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in b["runs"]:
        out.append(f"| {r['seed']} | {r['flipped']:,} | {r['flagged']:,} | {pct(r['precision'])} | {pct(r['recall'])} | "
                   f"{pct(r['f1'])} | {pct(r['precision_at_flipped'])} | {pct(r['suggested_is_original'])} | "
                   f"{pct(r['oof_accuracy'])} | {num(r['seconds'], 0)} |")
    c = b["clean"]
    out += ["", f"On the clean file (no flips) it flags {c['flagged']:,} rows ({pct(c['flagged_share'])}; out-of-fold "
            f"accuracy {pct(c['oof_accuracy'])}): false alarms and the source's own label errors together.", "",
            f"**DataCLUE TNEWS train** ({t['rows']:,} titles, {t['classes']} classes, noisy labels by design): "
            f"{t['flagged']:,} flagged ({pct(t['flagged_share'])}); out-of-fold accuracy against the given labels "
            f"{pct(t['oof_accuracy'])}. Derived training sets: "
            + ", ".join(f"`{d['data_dir']}` ({d['train_rows']:,} rows)" for d in t["derived"].values()) + ".", "",
            "Clean-test macro-F1 of each training set: the TF-IDF + logistic regression proxy, and e5-small "
            "fine-tuned with each recipe retrained (`configs/zh/e5_<recipe>.yaml`; the noisy row is "
            "chinese_encoders' own cells of that recipe, the same config, seeds and test):", ""]
    tables = (res.get("retrain") or {}).get("tables", {})
    header = "| train set | proxy accuracy | proxy macro-F1 |" + "".join(
        f" e5 {recipe}: macro-F1 per seed | e5 {recipe}: mean |" for recipe in tables)
    out += [header, "|" + "---|" * header.count(" |")]
    for variant, proxy in t["proxy_tfidf_logreg_test"].items():
        line = f"| {variant} | {pct(proxy['accuracy'])} | {pct(proxy['f1_macro'])} |"
        for table in tables.values():
            e5 = table.get(variant)
            per_seed = (", ".join(f"{pct(x)} ({seed})" for seed, x in zip(e5["seeds"], e5["f1_macro"], strict=True))
                        if e5 else "not run")
            line += f" {per_seed} | {pct(e5['f1_macro_mean']) if e5 else '–'} |"
        out.append(line)
    if not tables:
        out += ["", "No e5 retrain has run yet (`--retrain`)."]
    out.append("")
    return "\n".join(out)


def rows_label_noise(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    b, t = res["banking77"], res["tnews"]
    n = len(b["runs"])
    rng = b.get("range", {})

    def stat(key: str) -> str:
        value = pct(b["mean"].get(key))
        return value if n < 2 or key not in rng else f"{value} ({pct(rng[key][0])}–{pct(rng[key][1])})"

    rows = [Row(f"Banking77, {b['rate']:.0%} of labels flipped: precision / recall of `data noise`'s flagged rows"
                + (f", mean of {n} noise seeds" if n > 1 else ""), "none set", f"{stat('precision')} / {stat('recall')}",
                [], res["date"], cpu_of(res)),
            Row("TNEWS train: rows `data noise` flags", "none set", f"{t['flagged']:,} of {t['rows']:,} "
                f"({pct(t['flagged_share'])})", [], res["date"], cpu_of(res))]
    for recipe, table in (res.get("retrain") or {}).get("tables", {}).items():
        if "noisy" in table and any(v in table for v in ("dropped", "relabelled")):
            measured = "; ".join(f"{v} {pct(table[v]['f1_macro_mean'])} ({len(table[v]['seeds'])} seeds)"
                                 for v in ("noisy", "dropped", "relabelled") if v in table)
            rows.append(Row(f"TNEWS clean test macro-F1, e5-small {recipe}: noisy train against flagged rows dropped / "
                            "relabelled", "none set", measured, [], res["date"], cpu_of(res)))
        noisy = table.get("noisy")
        for variant in ("dropped", "relabelled"):
            cleaned = table.get(variant)
            if not cleaned:
                continue
            n, mean = len(cleaned["seeds"]), cleaned["f1_macro_mean"]
            lo, hi = cleaned.get("f1_macro_range", [min(cleaned["f1_macro"]), max(cleaned["f1_macro"])])
            measured = f"{pct(mean)} ({pct(lo)}–{pct(hi)}, {n} of 3 seeds; accuracy {pct(cleaned['accuracy_mean'])})"
            if noisy:
                diff = mean - noisy["f1_macro_mean"]
                ranges = [max(noisy["f1_macro"]) - min(noisy["f1_macro"]), hi - lo]
                beyond = ("beyond the larger seed range" if min(n, len(noisy["seeds"])) > 1 and abs(diff) > max(ranges)
                          else "within the seed range" if min(n, len(noisy["seeds"])) > 1 else "one seed: undecided")
                measured += (f"; noisy as given {pct(noisy['f1_macro_mean'])} (accuracy {pct(noisy['accuracy_mean'])}): "
                             f"{100 * diff:+.2f} pt, {beyond}")
            rows.append(Row(f"TNEWS clean test macro-F1, e5-small {recipe} on the `data noise` {variant} train set, "
                            "3-seed mean (issue 19's bar)", "≥ 58.0", measured, [n >= 3 and mean >= 0.58], res["date"],
                            cpu_of(res), f"tnews_{variant}_{recipe}"))
    return rows


# ---------------------------------------------------------------------------------------------------- decoder speed


SPEED_CELLS = (("fenlei_generative", "fenlei, LoRA generative (label scoring)"),
               ("peer_generative", "plain HF Trainer + PEFT, LoRA generative (label scoring)"),
               ("peer_tuned_generative", "HF Trainer + PEFT with group_by_length and native bf16, generative"),
               ("fenlei_seqcls", "fenlei, LoRA sequence classification"),
               ("peer_seqcls", "plain HF Trainer + PEFT, LoRA sequence classification"),
               ("peer_tuned_seqcls", "HF Trainer + PEFT with group_by_length and native bf16, seqcls"))


def collapse_text(share: Any) -> str:
    """The most frequent prediction's share of the test texts, flagged when the model answers one value."""
    if share is None:
        return "not recorded (counts as collapsed)"
    return f"{pct(share)}" + (" **collapsed**" if share > COLLAPSED_SHARE else "")


def render_decoder_train_speed(runs: list[Res], ctx: Res) -> str:
    """benchmarks/decoder_train_speed.py: fenlei's gemma-3-270m LoRA training against a plain HF Trainer + PEFT peer."""
    res = runs[-1]
    st, subset = res["settings"], res.get("subset", {})
    train, test = subset.get("train", {}), subset.get("test", {})
    majority = max((test.get("category_counts") or {"": 0}).values()) / max(test.get("rows") or 1, 1)
    out = [f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; CPU: {cpu_of(res)}; {st['model']} on {st['dataset']}: {train.get('rows')} of "
           f"{train.get('of')} training and {test.get('rows')} of {test.get('of')} test texts, {st['epochs']} epoch(s), "
           f"batch {st['batch_size']}, max_length {st['max_length']}, seed {st['seed']}, {st['threads']} threads. "
           f"The majority class is {pct(majority)} of the test texts.", "",
           "| cell | train samples/s | train s | precision | test accuracy (first field) | most frequent prediction |",
           "|---|---|---|---|---|---|"]
    for key, label in SPEED_CELLS:
        cell = res["cells"].get(key)
        if cell:
            out.append(f"| {label} | {num(cell['train_samples_per_s'], 2)} | {num(cell['train_seconds'])} | "
                       f"{cell.get('precision_used', 'fp32')} | {pct(cell['test_accuracy'])} | "
                       f"{collapse_text(cell.get('top_prediction_share'))} |")
    out += ["", "| task | fenlei / peer samples/s | fenlei accuracy | peer accuracy | target met |", "|---|---|---|---|---|"]
    for task, c in res.get("comparison", {}).items():
        out.append(f"| {task} | {ratio(c['samples_per_s_ratio'])} | {pct(c['fenlei_accuracy'])} | "
                   f"{pct(c['peer_accuracy'])} | {yes_no(c['met'])} |")
    out += ["", "Target: " + next(iter(res.get("comparison", {}).values()), {}).get("definition", "–") + ". A cell "
            f"whose most frequent prediction covers more than {COLLAPSED_SHARE:.0%} of the test texts (or whose share "
            "was not recorded) has not learned the task and never meets it.", ""]
    return "\n".join(out)


def rows_decoder_train_speed(runs: list[Res], ctx: Res) -> list[Row]:
    res = runs[-1]
    rows = []
    for task, c in res.get("comparison", {}).items():
        # Read from the cells, so that a run from before the share was recorded is judged by the same rule.
        shares = {who: (res["cells"].get(f"{who}_{task}") or {}).get("top_prediction_share") for who in ("fenlei", "peer")}
        collapsed = [who for who, share in shares.items() if share is None or share > COLLAPSED_SHARE]
        flag = f"; collapsed or share not recorded: {', '.join(collapsed)}" if collapsed else ""
        measured = f"{ratio(c['samples_per_s_ratio'])}, accuracy {pct(c['fenlei_accuracy'])} vs {pct(c['peer_accuracy'])}{flag}"
        met = bool(c["met"]) and not collapsed
        rows.append(Row(f"gemma-3-270m LoRA {task} training speed against a plain HF Trainer + PEFT peer "
                        f"({res['settings']['train_size']} train texts)", "≥ 2x at equal or better accuracy, not collapsed",
                        measured, [met], res["date"], cpu_of(res), f"decoder_train_speed_{task}"))
    return rows


# ---------------------------------------------------------------------------------------------------- cascade


CASCADE_DATA = {"endava": "Endava tickets", "online_shopping": "online_shopping_10_cats"}


def share_text(share: Any) -> str:
    return "–" if share is None else pct(share) + (" **collapsed**" if share > COLLAPSED_SHARE else "")


def correct_share(route: Res) -> float | None:
    """A route alone, abstaining under its threshold: correct answers over all texts (uncertain counted wrong)."""
    acc, cov = route.get("accuracy"), route.get("coverage")
    return 0.0 if cov == 0 else None if acc is None or cov is None else acc * cov


def render_cascade(runs: list[Res], ctx: Res) -> str:
    """benchmarks/cascade.py: the probe-first cascade against the probe alone and the reviewer alone."""
    out: list[str] = []
    for name, d in runs[-1].get("datasets", {}).items():
        made = d.get("made_here") or {}
        sub = made.get("subset") or {}
        train, test = sub.get("train", {}), sub.get("test", {})
        fields = d.get("fields") or []
        first = fields[0] if fields else None
        out += [f"**{CASCADE_DATA.get(name, name)}.** Command: `{d['command']}`  ",
                f"Date: {d['date']}; CPU: {cpu_of(d)}; model `{made.get('model', 'given')}`; "
                f"{train.get('rows', '–')} of {train.get('of', '–')} training and {test.get('rows', '–')} of "
                f"{test.get('of', '–')} test texts; probe threshold {d['probe_threshold']}, reviewer threshold "
                f"{d['reviewer_threshold']}; probe and reviewer made in {num(made.get('seconds'))} s. The LM is shared "
                f"between the probe and the reviewer: {yes_no(d.get('shared_model'))} (probe features from the shared "
                f"model against its own load: max |diff| {d.get('shared_features_max_abs_diff', '–')}).", "",
                "| route | field | coverage | accuracy on answered | correct of all texts (uncertain = wrong) | "
                "accuracy without abstention | share routed to the LM | texts/s | most frequent answer |",
                "|---|---|---|---|---|---|---|---|---|"]
        probe = (d.get("probe_alone") or {}).get(first) or {}
        out.append(f"| probe alone | {first} | {pct(probe.get('coverage'))} | {pct(probe.get('accuracy'))} | "
                   f"{pct(correct_share(probe))} | {pct(probe.get('accuracy_full_coverage'))} | 0% | "
                   f"{num(d['probe_alone'].get('texts_per_s'))} | {share_text(probe.get('top_prediction_share'))} |")
        reviewer = d.get("reviewer_alone") or {}
        for field in fields:
            r = reviewer.get(field) or {}
            out.append(f"| label scoring alone | {field} | {pct(r.get('coverage'))} | {pct(r.get('accuracy'))} | "
                       f"{pct(correct_share(r))} | {pct(r.get('accuracy_full_coverage'))} | 100% | "
                       f"{num(reviewer.get('texts_per_s'))} | {share_text(r.get('top_prediction_share'))} |")
        for mode, label in (("cascade_first", "cascade, probe's field only"), ("cascade_all", "cascade, every field")):
            c = d.get(mode) or {}
            for field, f in (c.get("fields") or {}).items():
                routes = ", ".join(f"{route} {pct(part.get('accuracy'))} of {part['answered']}/{part['texts']} answered"
                                   for route, part in (f.get("by_route") or {}).items())
                out.append(f"| {label} | {field} ({routes}) | {pct(f.get('coverage'))} | {pct(f.get('accuracy'))} | "
                           f"{pct(f.get('accuracy_all'))} | – | {pct(c.get('share_routed'))} "
                           f"({c.get('lm_texts')} texts through the LM) | {num(c.get('texts_per_s'))} | "
                           f"{share_text(f.get('top_prediction_share'))} |")
        sweep = d.get("sweep") or []
        if sweep:
            out += ["", f"Probe threshold against the first field ({first}), computed from the two routes' answers "
                    f"above (reviewer threshold {d['reviewer_threshold']}; 0 = the probe answers every text):", "",
                    "| probe threshold | share routed | coverage | accuracy on answered | accuracy without abstention |",
                    "|---|---|---|---|---|"]
            for row in sweep:
                out.append(f"| {row['probe_threshold']} | {pct(row.get('share_routed'))} | {pct(row.get('coverage'))} | "
                           f"{pct(row.get('accuracy'))} | {pct(row.get('accuracy_full_coverage'))} |")
        out.append("")
    return "\n".join(out)


def rows_cascade(runs: list[Res], ctx: Res) -> list[Row]:
    rows = []
    for name, d in runs[-1].get("datasets", {}).items():
        first = (d.get("fields") or [None])[0]
        c = ((d.get("cascade_first") or {}).get("fields") or {}).get(first) or {}
        probe = (d.get("probe_alone") or {}).get(first) or {}
        rev = (d.get("reviewer_alone") or {}).get(first) or {}
        shares = [probe.get("top_prediction_share"), rev.get("top_prediction_share"), c.get("top_prediction_share")]
        collapsed = any(x is None or x > COLLAPSED_SHARE for x in shares)
        train = (((d.get("made_here") or {}).get("subset") or {}).get("train") or {}).get("rows", "–")
        def answered(route: Res, correct: Any) -> str:
            return f"{pct(route.get('accuracy'))} on {pct(route.get('coverage'))} answered ({pct(correct)} of all correct)"

        measured = (f"cascade {answered(c, c.get('accuracy_all'))}, "
                    f"{pct((d.get('cascade_first') or {}).get('share_routed'))} routed, "
                    f"{num((d.get('cascade_first') or {}).get('texts_per_s'))} texts/s; alone at their thresholds: probe "
                    f"{answered(probe, correct_share(probe))}, label scoring {answered(rev, correct_share(rev))}; the probe "
                    f"without abstention {pct(probe.get('accuracy_full_coverage'))}"
                    + ("; a route collapsed or its share not recorded" if collapsed else ""))
        rows.append(Row(f"{CASCADE_DATA.get(name, name)}: probe-first cascade, {first} ({train} train texts)",
                        "none set (study)", measured, [], d["date"], cpu_of(d)))
    return rows


# ---------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Section:
    key: str  # anchor, notes file name and the first results file's benchmark name
    title: str
    files: tuple[str, ...]  # benchmark names folded into this section, in run order
    render: Callable[[list[Res], Res], str]
    rows: Callable[[list[Res], Res], list[Row]]


GROUPS: tuple[tuple[str, tuple[Section, ...]], ...] = (
    ("Training: throughput and accuracy", (
        Section("banking77_minilm", "Banking77, MiniLM: fenlei against Hugging Face Trainer scripts", ("banking77_minilm",),
                render_banking77, rows_banking77),
        Section("banking77_mpnet", "Banking77, MPNet-base", ("banking77_mpnet",), render_banking77, rows_banking77),
        Section("seed_spread", "Spread over seeds: Banking77 MiniLM and MPNet, CLINC150 out-of-scope", ("seed_spread",),
                render_seed_spread, rows_seed_spread),
    )),
    ("Numeric targets", (
        Section("gsm8k_lengths", "gsm8k answer lengths: labelling schemes for a numeric target", ("gsm8k_lengths",),
                render_gsm8k_lengths, rows_gsm8k_lengths),
    )),
    ("Decoder LMs as classifiers", (
        Section("endava_tickets", "Endava tickets (three fields)", ("endava_tickets",), render_decoder_benchmark, rows_decoder),
        Section("online_shopping", "online_shopping_10_cats (Chinese, two fields)", ("online_shopping",),
                render_decoder_benchmark, rows_decoder),
        Section("endava_tickets_full", "Endava tickets at the real budget: every route, urgency in three levels",
                ("endava_tickets_full",), render_decoder_benchmark, rows_decoder),
        Section("online_shopping_full", "online_shopping_10_cats at the real budget: every route",
                ("online_shopping_full",), render_decoder_benchmark, rows_decoder),
        Section("cascade_endava", "Probe-first cascade: Endava tickets", ("cascade_endava",), render_cascade,
                rows_cascade),
        Section("cascade_online_shopping", "Probe-first cascade: online_shopping_10_cats", ("cascade_online_shopping",),
                render_cascade, rows_cascade),
        Section("probe_layer_sweep", "Linear probe: several layers from one forward pass", ("probe_layer_sweep",),
                render_probe_layer_sweep, rows_probe_layer_sweep),
    )),
    ("Decoder LMs: training speed", (
        Section("decoder_train_speed", "gemma-3-270m LoRA training: fenlei against a plain HF Trainer + PEFT peer",
                ("decoder_train_speed",), render_decoder_train_speed, rows_decoder_train_speed),
    )),
    ("Chinese: encoder and decoder side by side", (
        Section("chinese_encoders", "multilingual-e5-small recipes against gemma-3-270m on Chinese data",
                ("chinese_encoders",), render_chinese_encoders, rows_chinese_encoders),
    )),
    ("Calibration and out-of-scope rejection", (
        Section("clinc150_oos", "CLINC150 out-of-scope rejection", ("clinc150_oos",), render_clinc150_oos, rows_clinc150_oos),
    )),
    ("Hyperparameter search", (
        Section("sweep_search", "Bayesian search with hyperband pruning against random search", ("sweep_search",),
                render_sweep_search, rows_sweep_search),
    )),
    ("Deployment", (
        Section("deploy_latency", "Bundle latency, accuracy and size: Banking77 MiniLM",
                ("deploy_latency", "deploy_latency_rerun", "deploy_latency_interleaved"), render_deploy_latency, rows_deploy_latency),
        Section("deploy_latency_mpnet", "Bundle latency, accuracy and size: Banking77 MPNet", ("deploy_latency_mpnet",),
                render_deploy_latency, rows_deploy_latency),
        Section("deploy_latency_gemma_seqcls", "Bundle latency, accuracy and size: gemma-3-270m LoRA sequence "
                "classifier, online_shopping", ("deploy_latency_gemma_seqcls",), render_deploy_latency, rows_deploy_latency),
        Section("deploy_latency_e5_shopping", "Bundle latency, accuracy and size: multilingual-e5-small, "
                "online_shopping", ("deploy_latency_e5_shopping",), render_deploy_latency, rows_deploy_latency),
        Section("deploy_latency_e5_zh", "Bundle latency, accuracy and size: multilingual-e5-small, Chinese demo tickets",
                ("deploy_latency_e5_zh",), render_deploy_latency, rows_deploy_latency),
        Section("int8_levers", "What each export change buys (INT8, batch 1)", ("int8_levers", "int8_levers_repeat"),
                render_latency_only, rows_latency_only),
        Section("int8_latency_cpus", "INT8 bundle against naive INT8 on two CPUs", ("int8_latency_cpus",),
                render_int8_latency_cpus, rows_int8_latency_cpus),
        Section("int8_options_rw", "INT8 settings against the parity gate: MiniLM, the graph the export writes",
                ("int8_options_rw",), render_int8_options, rows_int8_options),
        Section("int8_options", "INT8 settings against the parity gate: MiniLM, the graph before the CPU rewrites",
                ("int8_options",), render_int8_options, rows_int8_options),
        Section("int8_options_mpnet", "INT8 settings against the parity gate: MPNet", ("int8_options_mpnet",),
                render_int8_options, rows_int8_options),
        Section("kernel_costs", "The small kernels the CPU rewrites swap", ("kernel_costs",), render_kernel_costs,
                rows_kernel_costs),
        Section("serve_load_minilm", "HTTP service under load and faults: dynamic batching, MiniLM bundle",
                ("serve_load_minilm",), render_serve_load, rows_serve_load),
        Section("serve_load_e5_shopping", "HTTP service under load and faults: dynamic batching, e5-small bundle",
                ("serve_load_e5_shopping",), render_serve_load, rows_serve_load),
        Section("serve_load", "HTTP service under load and faults: dynamic batching, the tiny fixture bundle",
                ("serve_load",), render_serve_load, rows_serve_load),
        Section("hostile_requests", "Hostile requests against the service", ("hostile_requests",),
                render_hostile_requests, rows_hostile_requests),
    )),
    ("Data tools", (
        Section("label_noise", "Suspect labels: injected flips on Banking77, DataCLUE TNEWS", ("label_noise",),
                render_label_noise, rows_label_noise),
    )),
)


def fallback(name: str) -> Section | None:
    """A section for a results file no group names, by the kind its name suggests (None: not rendered)."""
    kinds = (("banking77", render_banking77, rows_banking77), ("deploy_latency", render_deploy_latency, rows_deploy_latency),
             ("int8_options", render_int8_options, rows_int8_options), ("int8_levers", render_latency_only, rows_latency_only),
             ("serve_load", render_serve_load, rows_serve_load))
    if name.endswith("_quick"):
        return None
    for prefix, render, rows in kinds:
        if name.startswith(prefix):
            return Section(name, name, (name,), render, rows)
    return None


HEADER = """# Benchmarks

Every figure below is read from `benchmarks/results/*.json`, written by the command shown with it, on the date and
CPU shown with it; the prose beside each section (method, budget, caveats, why a target is missed) is
`benchmarks/results/<section>.md`. Regenerate this file with `python benchmarks/render.py`. Speed targets are
ratios against a baseline measured in the same run, never absolute timings. "CPU: not recorded" means the results
file does not say which CPU ran it.

Reproduce every figure with one command, `flock /tmp/fenlei_cpu.lock python benchmarks/run_all.py --budget full`:
the steps of [the table at the end](#reproducing) in their fixed order, each writing its results file, then this
file re-rendered. It resumes (a finished step is skipped; a killed step restarts cleanly, or goes on from what it finished where
the step resumes itself, such as the seed spread, the answer-length study, the Chinese encoder cells, the decoder routes
with their epoch checkpoints) and `--list` prints the
plan with each step's expected duration. `--budget smoke` is the plumbing check of the same steps in minutes
(tiny random models, small subsets; the 38 steps of 2026-12-03 took 1,289 s on the 2-core AVX2-only AMD EPYC
family 25, no VNNI, bf16 or AMX, 1,123 s of it for 34 steps in one call; the 26 of 2026-12-02 took 455 s on an AMD
EPYC with avx512_vnni and avx512_bf16): its results go to `benchmarks/results/smoke/` and
`benchmarks/results/smoke/BENCHMARKS.smoke.md`, every figure there marked smoke, never here.

Sections come in a fixed order: training throughput and accuracy, numeric targets, decoder LMs as classifiers,
calibration and out-of-scope rejection, hyperparameter search, deployment (end-to-end bundle benchmarks first, then
the studies behind them), data tools. Reruns of one benchmark are folded into one section, and the summary shows
min / median / max across them.
"""


SMOKE_HEADER = """# Benchmarks: SMOKE RUN (plumbing check, not measurements)

Rendered from `benchmarks/results/smoke/*.json`, written by `python benchmarks/run_all.py --budget smoke`: every
step of the full plan through its script's `--smoke` option (the tiny random models of the tests, small data
subsets, one epoch). The figures below say only that each command runs end to end on this machine; every section
and summary row is marked SMOKE. The real figures are in BENCHMARKS.md.
"""
SMOKE = "SMOKE"


def is_smoke(res: Res) -> bool:
    """Written by a smoke run: the script's own flag, or the stamp run_all.py leaves."""
    return bool(res.get("smoke")) or (res.get("run_all") or {}).get("budget") == "smoke"


def mark_smoke(row: Row) -> Row:
    return Row(f"[{SMOKE}] {row.claim}", row.target, row.measured, row.met, f"{row.date} ({SMOKE.lower()})", row.cpu, row.key)


def reproducing() -> str:
    """The run_all.py plan (steps, results files, expected full-budget duration and how it was had), for the end."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.run_all import NOT_REPRODUCED, STEPS

    out = ['<a id="reproducing"></a>', "", "## Reproducing", "",
           "`flock /tmp/fenlei_cpu.lock python benchmarks/run_all.py --budget full` runs these steps in this order "
           "(`--only`/`--skip` step names; `--list` shows the state of each). Durations are for the full budget on "
           "the project's 2-core CPU; \"measured\" or \"estimated\" says how each was had, and the last column is "
           "the wall time run_all.py recorded in the results file, where a step has run under it.", "",
           "| # | step | results file | expected | basis | last run_all wall time |", "|---|---|---|---|---|---|"]
    for i, step in enumerate((s for s in STEPS if s.full), 1):
        walls = [((read_json(RESULTS / r) or {}).get("run_all") or {}) for r in step.results]
        last = ", ".join(f"{w['wall_s'] / 60:.1f} min ({w['finished'][:10]})" for w in walls
                         if w.get("budget") == "full" and w.get("wall_s") is not None) or "–"
        out.append(f"| {i} | `{step.name}` | {', '.join(f'`{r}`' for r in step.results) or '– (prepares a later step)'} "
                   f"| {step.minutes:g} min | {step.basis} | {last} |")
    total = sum(s.minutes for s in STEPS if s.full)
    out += ["", f"All steps: about {total / 60:.0f} hours. Not reproduced by it: "
            + "; ".join(f"`{k}` ({v})" for k, v in NOT_REPRODUCED.items()) + "."]
    return "\n".join(out) + "\n"


def read_json(path: Path) -> Res | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary_table(rows: list[tuple[Section, Row]], reasons: dict[str, dict[str, str]]) -> str:
    out = ["## Summary", "", "| claim | target | measured | met | date | CPU (model; flags) |", "|---|---|---|---|---|---|"]
    for section, row in rows:
        out.append(f"| [{row.claim}](#{section.key}) | {row.target} | {row.measured} | {met_text(row, reasons[section.key])} "
                   f"| {row.date} | {row.cpu} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of results files and their notes")
    p.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = p.parse_args(argv)
    folder = args.results if args.results.is_absolute() else ROOT / args.results
    out_path = args.out if args.out.is_absolute() else ROOT / args.out
    results: dict[str, Res] = {}
    for path in sorted(folder.glob("*.json")):
        res = json.loads(path.read_text())
        results[str(res.get("benchmark") or path.stem)] = res
    smoke_run = bool(results) and all(is_smoke(r) for r in results.values())
    listed = {name for _g, sections in GROUPS for s in sections for name in s.files}
    groups = [(title, [s for s in sections if any(f in results for f in s.files)]) for title, sections in GROUPS]
    others = [s for name in sorted(set(results) - listed) if (s := fallback(name)) is not None]
    if others:
        groups.append(("Other results", others))
    unshown = sorted(set(results) - listed - {s.key for s in others})
    if unshown:
        print(f"render.py: not rendered (no renderer for their kind): {', '.join(unshown)}", file=sys.stderr)

    summary: list[tuple[Section, Row]] = []
    reasons: dict[str, dict[str, str]] = {}
    body: list[str] = []
    for title, sections in groups:
        if not sections:
            continue
        body.append(f"## {title}\n")
        for s in sections:
            runs = [results[f] for f in s.files if f in results]
            smoke = any(is_smoke(r) for r in runs)
            note = "" if smoke else read_note(s.key, folder)  # a note's prose describes the real figures
            reasons[s.key] = missed_reasons(note)
            rows = s.rows(runs, results)
            summary += [(s, mark_smoke(row) if smoke else row) for row in rows]
            heading = f"{s.title} [{SMOKE}: plumbing check, not a measurement]" if smoke else s.title
            body.append(f'<a id="{s.key}"></a>\n\n### {heading}\n\n' + s.render(runs, results) + (f"\n{note}\n" if note else ""))
    tail = [] if smoke_run else [reproducing()]
    text = "\n".join([SMOKE_HEADER if smoke_run else HEADER, summary_table(summary, reasons), *body, *tail])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
