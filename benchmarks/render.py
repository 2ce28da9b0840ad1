"""Render BENCHMARKS.md from ``benchmarks/results/*.json`` (every figure there comes from a results file).

    python benchmarks/render.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

HEADER = """# Benchmarks

Every number below is read from `benchmarks/results/*.json`, written by the command shown with it, on the
machine and date shown with it. Regenerate this file with `python benchmarks/render.py`.
Speed targets are ratios against a baseline measured in the same run, never absolute timings.
"""


NOTES = {
    "gsm8k_lengths": """**Budget, and what it means.** On 2026-11-27 this machine was an AVX2-only EPYC (no AVX-512, VNNI or
bf16, unlike the day before), shared with other jobs: a first attempt fine-tuning all of MiniLM ran at 5.3
samples/s in fp32, so the configs' own budget (2 epochs over 6,726 rows, max_length 128) would have taken hours
per config. The benchmark therefore
ran every config with one reduced, identical budget (the command's overrides): a seeded 1,500-row subset of
gsm8k train (1,350 train / 150 validation), 1 epoch (43 optimizer steps, 42 after outlier removal), max_length 64, the bottom 5 of 6 encoder layers
frozen; gsm8k test is a seeded 600-row subset and the alpaca_eval transfer set a seeded 400-row subset. At this
budget the models are far from converged: read the table as a comparison of labelling schemes under one small,
equal budget, not as the best each method can do. `train s` was measured while other jobs shared the two cores and
is not comparable between rows. `two_stage_quantile` was not run: it needs 2 epochs (stage 1 + stage 2), and
`configs/gsm8k/two_stage_quantile.yaml` runs it with the configs' own budget. With `freeze_layers` overridden, the
embeddings are frozen in `markers_quantile` too, so its marker tokens keep their random initial embeddings.

**Reading it.** `target MAE` is the error in answer words when each prediction is replaced by its bin's train
median (or by the regressor's output); `/ constant` divides it by the MAE of always predicting the train median,
so below 1.0 means the labelling carries information about the number. Only the two regressors (MSE 0.92, Huber
on log 0.95) and the CORAL ordinal head (0.94) are below 1.0 here; every classifier over bins is at or above it. Equal-width bins reach the highest accuracy by predicting the two big bins (the top bin holds 1 of 1,350
train rows, the same collapse the prior work saw with `pd.cut`), yet their target MAE is no better than the
constant. k-means labels on (count, prompt length, question marks, keyword flags) are easier to predict than
quartiles but their Spearman correlation with the count is near zero: clusters defined partly by keywords say
little about the length, which is what the prior work's 99% accuracy hid. On alpaca_eval (a different
distribution: open-ended instructions, median 37 words) only `corn_manual` is below the constant predictor, by
0.6 words; nothing learned on gsm8k transfers usefully, with or without outlier removal. The hand-set edges of the prior work, `[0,1,4,8,17,28,41,66,98,200,1000]`, were adapted to gsm8k by
keeping the inner edges inside gsm8k's range (17, 28, 41, 66, 98) and dropping 1, 4, 8 and 200, whose bins would
hold 0, 0, 19 and 4 of the 7,473 train answers.""",
    "banking77_minilm": """How fenlei gets there (all in `configs/bench/banking77_minilm.yaml` and the default pipeline):
mean pooling (MiniLM's native sentence pooling), a head learning rate of 3e-3 next to the encoder's 1e-4, label
smoothing 0.1, 6% warmup, the embedding block frozen; batches grouped by length, bf16 autocast, fused AdamW, and
the unused BERT pooler dropped. The HF scripts use `AutoModelForSequenceClassification` (CLS pooler head) with
Trainer defaults (fused AdamW as well); the tuned one adds `train_sampling_strategy="group_by_length"` and
`bf16=True` (which on a CPU-only machine also needs `use_cpu=True`).

Caveats: fenlei trains on 90% of train and picks its best epoch on the held-out 10%; the HF scripts train on all
of train and keep the last epoch, so the comparison handicaps fenlei by 10% of the data. The plain HF script
reached 91.66% here, below the 92.5% quoted in the issue for a similar script; we report what this run measured.
The frozen-feature probe (93.0% in the issue) was not re-run here. Each system's accuracy comes from one seed
(42); run-to-run spread was not measured. With the embeddings trained (everything else equal: `python cli.py fit
--config configs/bench/banking77_minilm.yaml --model.init_args.freeze_embeddings=false`, then `test --ckpt_path
best`; same day and machine, not in the results file) fenlei reached 93.57% test accuracy.""",
    "banking77_mpnet": """MPNet-base (110M parameters, 12 x 768) with the MiniLM recipe, 3 epochs at lr 5e-5 (a budget this
2-core CPU finishes in about half an hour); no HF Trainer comparison (the plain script would take hours here).
Published fine-tuned base-size models reach 93.5-94% on Banking77.""",
    "deploy_latency": """Engines: `torch_fp32` is the trained EncoderClassifier in eval mode; `naive_*` is the issue's baseline
(plain `torch.onnx.export` of the model as trained, then `quantize_dynamic` with default, per-tensor settings);
`fenlei_*` are the bundle's models from `python cli.py export` (eager-attention export, onnxruntime BERT fusions
(Attention, SkipLayerNormalization, BiasGelu) before dynamic INT8, so attention runs as QAttention), and
`fenlei_ort_int8_static` a second bundle exported with `--quantization static` (QDQ S8S8, MinMax on 512 training
texts, forced past the parity gate so that it is measured even if it fails). Every engine runs with the same thread
count on the same pre-tokenized inputs; batch-1 latency is the model call only (tokenization excluded), measured in
interleaved rounds. Accuracy and agreement: the whole test split at batch 32. The serve load test runs the client
threads on the same 2 cores as the server, so it understates what a separate client machine would see.

**This run (2026-11-27, finished 11:25 UTC):** the benchmark model (`python cli.py fit --config
configs/bench/banking77_minilm.yaml`, 5 epochs, 93.6% test accuracy in torch), on an AVX2-only EPYC (no AVX-512,
no VNNI, no bf16; not the AVX-512 VNNI machine the issue's figures came from), shared with other tenants. The
bundle is the default export: fused graph plus the CPU rewrites (`fenlei/deploy/cpu_rewrites.py`: SkipLayerNormalization
and BiasGelu split into standard ops with the biases folded into the INT8 matrix products, the constant-zero token
types folded away), dynamic INT8 per-channel, the head in fp32 and tanh GELU in the INT8 graph. Its 8-bit attempt
failed the parity gate (98.9% agreement at batch 32 on the 1003 validation texts) and the 7-bit retry passed
(99.0% / 99.3% at batch 32 / 1). Four targets are met: 5.3x faster than torch fp32, 99.4% agreement and -0.13 pt
accuracy on the whole test split, 3.94x smaller. **Not met: 1.21x faster than the naive INT8 path (target
1.25x)**, with the ratio ranging 1.09-1.38 across the run's six rounds; `deploy_latency_rerun` (the same bundles,
measured again right after) gave 1.23x (rounds 1.00-1.58).

All runs of this command on 2026-11-27, in order: the previous default (no rewrites, 7-bit weights, INT8 head, exact
GELU) 1.11x (the results file's git history); rewrites with 8-bit weights and exact GELU 1.2497x (missed: targets
are judged on unrounded ratios); rewrites, 8-bit weights and tanh GELU 1.27x and, rerun, 1.42x (git history; that
bundle asked for an fp32 head but still had an INT8 one, a bug fixed since: the quantizer renamed the head's Gemm
before matching the exclusion list); this run 1.21x and its rerun 1.23x. So on this machine the fused bundle is about
1.2-1.4x faster than naive INT8 at batch 1 depending on the run, and the 1.25x target is met in two runs of six (and not in deploy_latency_interleaved below): not
reliably. The per-round spread inside one run (up to 1.0-1.6) is larger than anything the export changes bought
(int8_levers below).
Where the time goes (`flock /tmp/fenlei_cpu.lock python benchmarks/profile_onnx.py
benchmarks/work/deploy/bundle_dynamic/model_int8.onnx benchmarks/work/deploy/naive/model_int8.onnx --tokenizer
benchmarks/work/deploy/bundle_dynamic --threads 2`, onnxruntime's profiler, earlier bundle): the INT8 matrix products
(DynamicQuantizeMatMul and QAttention, about 2 ms of the roughly 3 ms of kernel time per request) are the same work
in both paths and without VNNI they dominate; fusion removes the ~100 small shape/transpose/softmax nodes around
them, and the rewrites make the remaining small kernels cheaper. Static QDQ S8S8 no longer collapses (93.1% test
accuracy, 98.5% agreement), but on this CPU it is slower than fp32 (S8S8 without VNNI) and larger (the embedding
table stays fp32).""",
    "deploy_latency_mpnet": """The same benchmark on the Banking77 **MPNet** model (`python cli.py fit --config
configs/bench/banking77_mpnet.yaml --trainer.max_epochs 2` on this machine, 94.12% test accuracy in torch; its own
work folder). Finished 13:47 UTC, same AVX2 EPYC. MPNet's attention is not fused (relative position bias,
docs/deployment.md), so the fused fp32 graph is no faster than the naive one (27.3 vs 27.9 ms). The default export
needed its third attempt: 8-bit weights failed the gate (1.4% / 0.8% agreement at batch 32 / 1 on the 1003
validation texts: u8s8 saturation without VNNI), so did 7-bit (96.8% / 97.9%); 7-bit with the 12 FFN output
projections in fp32 passed (99.4% / 99.2%). That is what the two missed targets measure: the bundle is 2.23x
smaller than fp32 (target 3.5x) and at batch 1 it is 0.79x the speed of the naive INT8 model (every round 0.68-0.94x).
The naive model is faster because it is all-INT8 and per-tensor, and it is also the one that is wrong here: 91.56%
test accuracy (-2.56 pt) and 94.5% agreement with torch, far outside the parity gate, against 94.06% (-0.06 pt) and
99.6% for the bundle. Met: 3.97x faster than torch fp32, agreement, accuracy loss. Static QDQ S8S8 (forced past the
gate to be measured) collapses to 63.7%. The service needed 2.4 s to answer /health with this 195 MB model (1.0 s
with MiniLM).""",
    "deploy_latency_rerun": """The same bundles as deploy_latency (`--skip_export`), measured again right after it (finished 11:28 UTC) on
the same machine; only the timings differ from that run (accuracy, agreement and sizes are the same models'). Shown
to give the size of the run-to-run spread on this shared 2-core machine.""",
    "deploy_latency_interleaved": """The same bundles again (`--skip_export`, finished 11:47 UTC), with the benchmark's current latency
method: 30 rounds of 20 texts per engine, the engine order reversed every other round, 5 untimed calls after each
switch (deploy_latency and its rerun above used 6 rounds of 100 texts and 8 untimed calls). Even and odd rounds give
the same median ratio (1.21x / 1.22x), so the reversed order adds no bias; the single rounds spread 0.53-1.88x, and
the pooled p50 ratio is 1.15x: not met, and the machine was slower than 20 minutes earlier (naive INT8 3.43 ms
against 3.20 ms).""",
    "int8_options": """**The graph before the CPU rewrites** (fused only; run earlier on 2026-11-27). All variants are dynamic
INT8 of the same fused fp32 graph; agreement and macro-F1 change are against that fp32 graph on the validation
split the export's parity gate uses (gate: agreement >= 99% and |change| <= 0.5 pt at both batch sizes).
Per-channel with reduced range is the one all-INT8 variant that passes on this graph (it was the export default
then; see int8_options_rw for the graph the export writes now); keeping a third of the weights in fp32 (FFN outputs, or the first and last layer) passes with more margin
at 33 MB. U8U8 products (`QUInt8` weights, which cannot saturate without VNNI) do not pass either. The
`..._keep_head` row did not in fact keep the head in fp32 (the quantizer renamed the head's Gemm to `..._MatMul`
before matching the exclusion list; fixed later that day), which is why it equals the row above it. Latency: 300 batch-1
requests per variant in 5 blocks, variants taking turns block by block; differences under ~0.3 ms are within the
run-to-run spread seen between this table and deploy_latency.""",
    "int8_options_mpnet": """The same study on the Banking77 **MPNet** model (`python cli.py fit --config
configs/bench/banking77_mpnet.yaml --trainer.max_epochs 2`, 2026-11-27 on this AVX2 machine: 1582 s, 12.1 samples/s
in fp32, since the CPU has no native bf16; validation macro-F1 0.935), after its default export had failed the
gate (agreement with torch at batch 32 / batch 1: 8-bit 1.4% / 0.8%, 7-bit 96.8% / 97.9%). Graph without attention fusion (MPNet's relative position bias,
docs/deployment.md), exact GELU. Full 8-bit weights collapse the model, with or without the FFN outputs in fp32: the
u8s8 products saturate on a CPU without VNNI. All-INT8 7-bit and U8U8 (which cannot saturate) both lose about 2-3% of
the argmax decisions; keeping the 12 FFN output projections (whose inputs are GELU outputs) in fp32 brings both to
99.4% / 99.0% at 195 MB instead of 110 MB, and 21.4 ms instead of 15.2 ms at batch 1. That became the export's third
attempt (`--keep_ffn_out_fp32`).""",
    "int8_options_rw": """The same study on **the graph after the CPU rewrites** (`fenlei/deploy/cpu_rewrites.py`; exact GELU in every
variant here; rerun after the head-exclusion fix, so `_keep_head` really keeps it: its size is 0.08 MB larger and its
agreement identical). Now per-channel with 8-bit weights passes (99.4% / 99.1%) and 7-bit fails (98.7% at batch 32),
the reverse of int8_options. The deploy_latency bundle (tanh GELU, fp32 head) then failed with 8-bit (98.9%) and
passed with 7-bit (99.0%): on these 1003 texts both settings sit within a few texts of the 99% line, so the export
tries 8-bit first and 7-bit if the gate fails (docs/deployment.md). Keeping the embeddings in fp32 passes with the
best F1 change but makes the model 59 MB. Latency: 200 batch-1 requests per variant; the spread between variants is
within this machine's run-to-run noise.""",
    "int8_levers": """What each change bought, batch 1, 2 threads, block-interleaved (each block starts with 10 untimed calls).
`before_rewrites`: the previous default (`cli.py export ... --no_cpu_rewrites --no-keep_head_fp32
--no-gelu_approximation --reduce_range --force`, written to benchmarks/work/deploy/bundle_before_rewrites; it passes
the gate at 99.0%); `rewrites_only`: the same with the CPU rewrites (`... --no-keep_head_fp32 --no-gelu_approximation
--reduce_range --force`; it fails the gate at 98.7%); `default`: the deploy_latency bundle (rewrites, fp32 head,
tanh GELU, 7-bit after the 8-bit attempt failed the gate). Two runs of the same command right after
deploy_latency_rerun (`int8_levers`, `int8_levers_repeat`), on a machine that had just become much faster (naive
2.3-2.7 ms here against 3.2-3.4 ms minutes before): speed-up over naive INT8 1.13x / 1.11x for the previous default,
1.18x / 1.21x with the rewrites, 1.35x / 1.20x for the full default. Two earlier runs of the same command (before
the head fix, so `default` then had an INT8 head and 8-bit weights; in the results files' git history)
gave 1.24x / 1.28x, 1.29x / 1.32x and 1.20x / 1.36x. Reading: the export changes are worth roughly 0-20% at batch 1
on this CPU, about 8% on average over these four runs, and the machine's run-to-run spread is as large.""",
    "kernel_costs": """Why the CPU rewrites (`fenlei/deploy/cpu_rewrites.py`): onnxruntime's fused `SkipLayerNormalization` costs
several times the `Add` + `LayerNormalization` it replaces (the bias Add disappears into the INT8 matrix product in
the real graph, which is the last row of that pair), and `Gelu` alone costs about what `BiasGelu` did, so folding
the bias into the MatMul saves the bias pass; `FastGelu` (tanh) is cheaper still. These are per-op savings of
10-40 us, i.e. a few hundred microseconds per request over 12 layer norms and 6 GELUs.""",
    "int8_levers_repeat": """Second run of the int8_levers command (see there).""",
    "int8_latency_cpus": """**The graph before the CPU rewrites.** The same two INT8 files (copied, with tokenizer.json and the test texts, into a local `.devdata/`
folder so that they could travel) timed with the same script on this project's CPU and on a CPU with AVX-512 VNNI
and AMX, the kind the issue's figures came from; each model ran 5 blocks of 120 requests, the two taking turns. On
the Xeon the whole INT8 model answers in 1.0-1.5 ms instead of 3.2-4.6 ms (a different, faster CPU, so not all of
that is VNNI), and the fused graph's lead grows with the thread count: none at 1 thread, 1.21x at 2, 1.33x at 4. So
the 1.25x target (deploy_latency runs both at 2 threads) is missed at 2 threads on both CPUs, narrowly on the VNNI
one, and met at 4 threads there.""",
    "clinc150_oos": """MiniLM trained on the 150 in-scope intents only (3 epochs, `configs/bench/clinc150_minilm.yaml`), served
from the dynamic INT8 bundle. OOS score: max-softmax probability. The threshold is chosen on validation (3000
in-scope + 100 oos texts) to maximise (in-scope accuracy with rejection + OOS recall) / 2 and applied unchanged to
test (4500 + 1000); "calibrated" divides the logits by the temperature fitted (NLL) on in-scope validation at export.
Published for BERT-base on the same split: in-scope accuracy 96-97%, OOS recall 40-59% (Larson et al. 2019), AUROC
about 0.94.

This run (2026-11-27 11:45 UTC, AVX2-only AMD EPYC, 2 cores; the fit is the morning's run in runs/clinc150_minilm,
reused; the export ran in the command above with the current defaults: CPU rewrites, fp32 head, tanh GELU in the
INT8 graph, 8-bit weights on the first attempt): the INT8 bundle passed its parity gate (99.4% / 99.5% agreement at
batch 32 / 1 on in-scope validation). In-scope accuracy 96.5% is in the published range. OOS recall (85.6-88.5%) is well
above the published 40-59% because the threshold here is tuned on validation for the balance of the two (it rejects
4.6-6.3% of in-scope test texts), whereas the published figures use a fixed confidence rule; AUROC, which needs no
threshold, is 0.97-0.98 against about 0.94. Temperature scaling (T = 0.70: MiniLM is under-confident after label
smoothing) cuts the in-scope ECE from 0.062 to 0.010 but does not help rejection: the AUROC moves from 0.978 to 0.972
(a temperature changes how max-softmax
values of different texts compare) and the two tuned operating points differ by at most 1.3 points.""",
}


def pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def num(x: Any, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render_banking77(res: dict[str, Any]) -> str:
    rows = []
    labels = {"fenlei": "fenlei", "hf_trainer": "HF Trainer (plain script)", "hf_trainer_tuned": "HF Trainer, group_by_length + bf16"}
    for key, label in labels.items():
        if key not in res:
            continue
        r = res[key]
        runs = ", ".join(num(v) for v in r.get("throughput_runs", []))
        rows.append(f"| {label} | {pct(r['test_accuracy'])} | {pct(r['test_macro_f1'])} | {num(r['train_samples_per_s'])} "
                    f"({runs}) | {num(r.get('full_run_train_s'), 0)} | {r.get('train_examples', '')} |")
    budget = res["budget"]
    out = [f"## {res['benchmark']}",
           "",
           f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['machine'].get('processor') or 'CPU'}, {res['machine']['cpus']} cores, "
           f"{res['machine']['platform']}; config `{res['config']}`.  ",
           f"Budget{' (every system)' if 'hf_trainer' in res else ''}: {budget['epochs']} epochs, lr {budget['lr']}, batch {budget['batch_size']}, "
           f"max_length {budget['max_length']}, seed {budget['seed']}.",
           "",
           "| system | test accuracy | test macro-F1 | train samples/s, median (runs) | full-run train s | trained on |",
           "|---|---|---|---|---|---|",
           *rows,
           ""]
    if "throughput_steps" in res.get("fenlei", {}):
        out.append(f"Throughput: {res['fenlei']['throughput_steps']} training steps per run, validation excluded; "
                   "accuracy: full runs, evaluated on the test split once (fenlei: best epoch on its validation split).")
        out.append("")
    if "ratios" in res:
        ra, tg = res["ratios"], res["targets"]
        out += ["| ratio / target | value | met |", "|---|---|---|",
                f"| throughput vs plain HF Trainer (target >= 2x) | {ra['throughput_vs_hf_trainer']}x | {tg['throughput_ge_2x_hf_trainer']} |",
                f"| throughput vs tuned HF Trainer (target >= 1.1x) | {ra['throughput_vs_hf_trainer_tuned']}x | {tg['throughput_ge_1.1x_hf_trainer_tuned']} |",
                f"| test accuracy >= 93.5% | {pct(res['fenlei']['test_accuracy'])} | {tg['fenlei_test_accuracy_ge_0.935']} |",
                f"| test accuracy >= plain HF Trainer | {ra['accuracy_minus_hf_trainer_pt']:+.2f} pt | {tg['fenlei_accuracy_ge_hf_trainer']} |",
                ""]
    return "\n".join(out)


def render_deploy_latency(res: dict[str, Any]) -> str:
    names = {"torch_fp32": "torch fp32", "naive_ort_fp32": "naive ORT fp32", "naive_ort_int8": "naive ORT int8 (baseline)",
             "fenlei_ort_fp32": "fenlei ORT fp32 (fused)", "fenlei_ort_int8": "fenlei ORT int8 dynamic (bundle)",
             "fenlei_ort_int8_static": "fenlei ORT int8 static QDQ"}
    rows = []
    for key, label in names.items():
        if key not in res["engines"]:
            continue
        e = res["engines"][key]
        rows.append(f"| {label} | {num(e['batch1_p50_ms'], 2)} | {num(e['batch1_p95_ms'], 2)} | {num(e['batch32_texts_per_s'])} "
                    f"| {pct(e['test_accuracy'])} | {pct(e['agreement_vs_torch'])} | {num(e['size_mb'])} |")
    ra, tg = res["ratios"], res["targets"]
    out = [f"## {res['benchmark']}", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['machine'].get('processor') or 'CPU'}, {res['machine']['cpus']} cores; "
           f"{res['threads']} threads for every engine; model `{res['run_dir']}`, test file `{res['test_file']}` ({res['test_n']} texts).",
           "", "| engine | batch-1 p50 ms | batch-1 p95 ms | batch-32 texts/s | test accuracy | argmax agreement vs torch | size MB |",
           "|---|---|---|---|---|---|---|", *rows, "",
           "| ratio / target | value | met |", "|---|---|---|",
           f"| batch-1 p50 speed-up vs torch fp32 (target >= 3.5x) | {ra['speedup_vs_torch_fp32_batch1_p50']}x | {tg['speedup_vs_torch_ge_3.5x']} |",
           f"| batch-1 p50 speed-up vs naive int8 (target >= 1.25x) | {ra['speedup_vs_naive_int8_batch1_p50']}x | {tg['speedup_vs_naive_int8_ge_1.25x']} |",
           *([f"| the same, round by round ({len(ra['speedup_vs_naive_int8_per_round'])} rounds, min / median / max) | "
              f"{min(ra['speedup_vs_naive_int8_per_round'])} / {statistics.median(ra['speedup_vs_naive_int8_per_round']):.3f} / "
              f"{max(ra['speedup_vs_naive_int8_per_round'])} | |"] if "speedup_vs_naive_int8_per_round" in ra else []),
           f"| argmax agreement vs torch (target >= 99%) | {pct(ra['agreement_vs_torch'])} | {tg['agreement_ge_99pct']} |",
           f"| accuracy loss (target <= 0.3 pt) | {ra['accuracy_loss_pt']:+.2f} pt | {tg['accuracy_loss_le_0.3pt']} |",
           f"| ONNX fp32 / int8 size (target >= 3.5x) | {ra['size_ratio_onnx_fp32_over_int8']}x | {tg['size_ratio_ge_3.5x']} |", ""]
    serve = res.get("serve")
    if serve:
        out += [f"Service (`python cli.py serve`, one text per request over loopback): ready {serve['startup_to_health_s']} s "
                "after process start.", "", "| concurrency | requests | failed | requests/s | p50 ms | p95 ms |", "|---|---|---|---|---|---|"]
        out += [f"| {lv['concurrency']} | {lv['requests']} | {lv['failed']} | {lv['requests_per_s']} | {lv['p50_ms']} | {lv['p95_ms']} |"
                for lv in serve["levels"]]
        out.append("")
    return "\n".join(out)


def render_int8_options(res: dict[str, Any]) -> str:
    """Dynamic INT8 settings vs the parity gate (benchmarks/int8_options.py)."""
    m = res["machine"]
    out = [f"## {res['benchmark']} (which INT8 settings pass the parity gate)", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {m['cpus']} cores, VNNI: {m['vnni']}; {res['threads']} threads; model "
           f"`{res['run_dir']}`; {res['eval_n']} held-out texts ({res['eval_source']}); reference: {res['reference']}; "
           f"latency over {res['latency_n']} batch-1 requests per variant.", "",
           "| variant | kept fp32 | size MB | batch-1 p50 ms | agreement b32 / b1 | macro-F1 change b32 / b1 (pt) | passes gate |",
           "|---|---|---|---|---|---|---|"]
    for name, v in res["variants"].items():
        if name == "fp32":
            out.append(f"| fp32 (fused) | all | {num(v['size_mb'])} | {num(v['batch1_p50_ms'], 2)} | – | – | – |")
            continue
        out.append(f"| `{name}` | {', '.join(v['kept_fp32']) or '–'} ({v['nodes_kept_fp32']} nodes) | {num(v['size_mb'])} | "
                   f"{num(v['batch1_p50_ms'], 2)} | {pct(v['batch32']['agreement'])} / {pct(v['batch1']['agreement'])} | "
                   f"{v['batch32']['macro_f1_change_pt']:+.2f} / {v['batch1']['macro_f1_change_pt']:+.2f} | "
                   f"{v['passes_default_gate']} |")
    out.append("")
    return "\n".join(out)


def render_int8_latency_cpus(res: dict[str, Any]) -> str:
    """The deploy bundle's INT8 model against the naive INT8 model on two CPUs (benchmarks/profile_onnx.py)."""
    out = [f"## {res['benchmark']} (fenlei vs naive INT8, batch 1, on two CPUs)", "", f"Command: `{res['command']}`  ",
           f"Models: fenlei = {res['models']['fenlei']}; naive = {res['models']['naive']}. Inputs: {res['inputs']}.", "",
           "| machine | date | onnxruntime | threads | fenlei p50 ms | naive p50 ms | naive / fenlei |", "|---|---|---|---|---|---|---|"]
    for run in res["runs"]:
        keys = sorted({k.rsplit("threads=", 1)[1] for k in run["p50_ms"]}, key=int)
        for t in keys:
            f = next(v for k, v in run["p50_ms"].items() if "bundle" in k and k.endswith(f"threads={t}"))
            n = next(v for k, v in run["p50_ms"].items() if "naive" in k and k.endswith(f"threads={t}"))
            out.append(f"| {run['machine']} | {run['date']} | {run['onnxruntime']} | {t} | {num(f, 3)} | {num(n, 3)} | {n / f:.2f}x |")
    out.append("")
    return "\n".join(out)


def render_latency_only(res: dict[str, Any]) -> str:
    """Batch-1 latency of several ONNX models, taking turns block by block (profile_onnx.py --latency_only)."""
    flags = ", ".join(f for f, on in res["cpu_flags"].items() if on) or "none listed"
    first = next(iter(res["p50_ms"]))
    base = res["p50_ms"][first]
    out = [f"## {res['benchmark']}", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['cpus']} CPUs ({flags}); onnxruntime {res['onnxruntime']}; {res['n']} batch-1 "
           f"requests per model in {res['rounds']} blocks, the models taking turns block by block.", "",
           "| model | file | p50 ms | p95 ms | speed-up vs first row |", "|---|---|---|---|---|"]
    for key, p50 in res["p50_ms"].items():
        path = key.rsplit(" threads=", 1)[0]
        out.append(f"| {res['labels'].get(path, path)} (threads={key.rsplit('threads=', 1)[1]}) | `{path}` | {num(p50, 3)} "
                   f"| {num(res['p95_ms'][key], 3)} | {base / p50:.2f}x |")
    out.append("")
    return "\n".join(out)


def render_kernel_costs(res: dict[str, Any]) -> str:
    """Per-op cost of the kernels the CPU rewrites swap (benchmarks/kernel_costs.py)."""
    threads = list(res["us_per_op"])
    out = [f"## {res['benchmark']} (the small kernels the CPU rewrites swap)", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['cpus']} CPUs; onnxruntime {res['onnxruntime']}; a chain of {res['chain']} "
           f"ops on {res['tokens']} tokens, median of {res['runs']} runs, per op.", "",
           "| kernel(s) | " + " | ".join(f"us, {t}" for t in threads) + " |", "|---|" + "---|" * len(threads)]
    for name in res["us_per_op"][threads[0]]:
        out.append(f"| {name} | " + " | ".join(num(res["us_per_op"][t][name], 1) for t in threads) + " |")
    out.append("")
    return "\n".join(out)


def render_clinc150_oos(res: dict[str, Any]) -> str:
    labels = {"uncalibrated": "max-softmax, T = 1", "calibrated": f"max-softmax, T = {res['results']['calibrated']['temperature']:.2f}",
              "bundle_default_threshold": "bundle default threshold (95% in-scope coverage on validation, calibrated)"}
    rows = []
    for key, label in labels.items():
        r = res["results"].get(key)
        if r is None:
            continue
        rows.append(f"| {label} | {num(r['threshold'], 3)} | {pct(r['in_scope_accuracy'])} | {pct(r['in_scope_accuracy_with_rejection'])} "
                    f"| {pct(r['oos_recall'])} | {num(r['oos_auroc'], 3)} | {num(r['in_scope_ece'], 3)} |")
    out = [f"## {res['benchmark']}", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['machine'].get('processor') or 'CPU'}, {res['machine']['cpus']} cores; "
           f"config `{res['config']}`; test {res['n']['test']} in-scope + {res['n']['oos_test']} oos texts.", "",
           "| confidence | threshold | in-scope accuracy | in-scope accuracy with rejection | OOS recall | OOS AUROC | in-scope ECE |",
           "|---|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(out)


def render_gsm8k_lengths(res: dict[str, Any]) -> str:
    """One row per labelling scheme, sorted by target_mae (the error in answer words), with the transfer test."""
    rows = []
    for r in res["runs"]:
        t = r.get("transfer_alpaca", {})
        rows.append(
            f"| `{r['name']}` | {r['module']} | {r['scheme']} x {r['num_bins']} | {pct(r['accuracy'])} | {pct(r['macro_f1'])} "
            f"| {pct(r['min_bin_f1'])} | {num(r['mae_bins'], 3)} | {num(r['qwk'], 3)} | **{num(r['target_mae'], 2)}** "
            f"| {num(r['target_mae_vs_constant'], 3)} | {num(r['train_s'], 0)} | {pct(t.get('acc'))} | {num(t.get('target_mae'), 1)} "
            f"| {num(t.get('constant_mae'), 1)} |"
        )
    constant = res["runs"][0]["constant_mae"] if res["runs"] else None
    budget = res["budget"]
    out = [f"## {res['benchmark']}", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['machine'].get('processor') or 'CPU'}, {res['machine']['cpus']} cores.  ",
           f"Every config in `configs/gsm8k/` with one budget: {budget['encoder']}, {budget['epochs']} epoch(s), batch "
           f"{budget['batch_size']}, max_length {budget['max_length']}, seed {budget['seed']}, gsm8k train rows "
           f"{budget.get('train_rows', 'all')} (10% of them held out for validation), bottom "
           f"{budget.get('freeze_layers') or 'config-set'} encoder layers frozen; test rows {budget.get('test_rows', 'all')}, "
           f"alpaca_eval rows {budget.get('transfer_rows', 'all')}; target = answer words; constant predictor (train "
           f"median) on the gsm8k test rows: MAE {num(constant, 2)} words."
           + "".join(f" Not run: `{k}` ({v})." for k, v in res.get("skipped", {}).items()), "",
           "| config | module | bins | accuracy | macro-F1 | worst bin F1 | MAE in bins | QWK | target MAE (words) "
           "| / constant | train s | alpaca: accuracy | alpaca: target MAE | alpaca: constant MAE |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *rows, "",
           "The labellings themselves, fitted on the training split (`binning.json` of each run):", "",
           "| config | train bin sizes | balance (1 = equal) | silhouette | train rows removed as outliers |",
           "|---|---|---|---|---|",
           *[f"| `{r['name']}` | {r['train_bin_sizes']} | {num(r['balance'], 3)} | {num(r['silhouette'], 3)} "
             f"| {r['outliers_removed']} |" for r in res["runs"]],
           ""]
    return "\n".join(out)


DECODER_CAVEATS = {
    "endava_tickets": """Caveats: a small stratified subset (the generative and sequence-classification routes train on
90% of it; 10% is split off as an unused validation set), one seed. Category is 70% code "4", so accuracy near 65-70%
with a low macro-F1 means a model that has learned little beyond the majority class; the probe (logistic regression on
mean-pooled mid-depth hidden states, features computed once and reused for all three fields) is the strongest route
at this budget. Urgency and impact are almost fully determined by `ticket_type` in this copy (see the data's
SOURCE.md).""",
    "online_shopping": """Caveats: Chinese reviews, gemma-3-270m being the only offline model here that reads Chinese; a small
stratified subset (the generative and sequence-classification routes train on 90% of it; 10% is split off as an
unused validation set), one seed. The generative route predicts category and sentiment as one JSON object; the probe
fits one head per field on features computed once.""",
}


DECODER_SPEED = """Where the time goes (`flock /tmp/fenlei_cpu.lock .venv/bin/python benchmarks/profile_label_scoring.py`,
2026-11-27, same machine, Endava adapter and test batches; 128-token prompts, 77 tokens shared by all texts): label
scoring 1.58 s per batch of 8 with constrained-decoding normalisation and 2.82 s with full-vocabulary normalisation,
against 8.80 s for free generation (5.6x and 3.1x). The floor, one forward over each text's own tokens after the
shared instruction and nothing else, is 1.29 s: constrained label scoring adds 0.29 s for three fields. The
full-vocabulary variant must feed every label prefix (8 category values incl. "1" and "11", each with its closing
quote) and run Gemma's 262k-row LM head at each; the constrained one feeds only where values branch (one node:
after "1") and computes the LM head rows of the label tokens only. One text at a time (the service case;
`--batch_size 1 --batches 12`): 0.57 s (constrained) and 0.94 s (vocab) per text against 3.32 s for free
generation (5.9x and 3.5x). Before the label tree (repeating the prompt cache per label, six forward passes for
three fields) this was 4.63 s per batch of 8 and 1.79 s per single text (about 2x at both). A second run of the
same command later that day, after the full-vocabulary path was changed to compute its softmax a few rows at a
time and with the adapter of the lr 1e-3 run (see the notes below) in the work folder: 1.67 s (constrained), 3.07 s
(vocab), floor 1.31 s, free generation 8.53 s (5.1x and 2.8x): the margin over 5x on these four batches is small,
and run-to-run spread on this machine is about 5-10%."""


def render_decoder_benchmark(res: dict[str, Any]) -> str:
    """Decoder LMs as classifiers (benchmarks/decoder_classifiers.py): probe vs LoRA generative vs LoRA seq-cls."""
    sub = res["subset"]
    out = [f"## {res['benchmark']} (decoder LMs as classifiers)", "", f"Command: `{res['command']}`  ",
           f"Date: {res['date']}; machine: {res['machine']}; model `{res['model']}`.  ",
           f"Stratified subset: {sub['train']['rows']} of {sub['train']['of']} train and {sub['test']['rows']} of "
           f"{sub['test']['of']} test texts, text cut to {res['settings']['max_length']} tokens, "
           f"{res['settings'].get('epochs', 1)} epoch(s) for the fine-tuned routes "
           f"(lr {res['settings']['lr']}, batch {res['settings']['batch_size']}).", "",
           "| route | category accuracy | category macro-F1 | parse failures | hallucinations | examples/s (inference) |",
           "|---|---|---|---|---|---|"]
    for key, label in (("label_scoring", "LoRA generative, label scoring (constrained-decoding normalisation)"),
                       ("label_scoring_vocab", "LoRA generative, label scoring (full-vocabulary normalisation)"),
                       ("free_generation", "LoRA generative, free generation")):
        if key in res:
            r = res[key]
            out.append(f"| {label} | {pct(r['accuracy'])} | {pct(r['f1_macro'])} | {pct(r['parse_failure_rate'])} | "
                       f"{pct(r['hallucination_rate'])} | {num(r['examples_per_s'], 2)} |")
    if "seqcls_lora" in res:
        r = res["seqcls_lora"]
        out.append(f"| LoRA sequence classification | {pct(r['accuracy'])} | {pct(r['f1_macro'])} | – | – | {num(r['examples_per_s'], 2)} |")
    probe = res.get("linear_probe", {}).get("category")
    if probe:
        speed = probe["extraction"]["test"]["examples_per_s"]
        for head, r in probe["heads"].items():
            out.append(f"| linear probe ({head}, layer {probe['layer']}, {probe['pooling']} pooling) | {pct(r['accuracy'])} | "
                       f"{pct(r['f1_macro'])} | – | – | {num(speed, 2)} (feature extraction) |")
    out.append("")
    fields = sorted({f for k in ("label_scoring", "free_generation") if k in res for f in res[k]["fields"]})
    if fields:
        out += ["Per field (generative; accuracy / macro-F1 / parse failures / hallucinations):", "",
                "| field | label scoring | free generation | probe (logreg) |", "|---|---|---|---|"]
        for f in fields:
            cells = []
            for k in ("label_scoring", "free_generation"):
                r = res.get(k, {}).get("fields", {}).get(f)
                cells.append("–" if r is None else f"{pct(r['accuracy'])} / {pct(r['f1_macro'])} / "
                             f"{pct(r['parse_failure_rate'])} / {pct(r['hallucination_rate'])}")
            pr = res.get("linear_probe", {}).get(f, {}).get("heads", {}).get("logreg")
            cells.append("–" if pr is None else f"{pct(pr['accuracy'])} / {pct(pr['f1_macro'])}")
            out.append(f"| {f} | " + " | ".join(cells) + " |")
        out.append("")
    path = res.get("generative_lora", {}).get("label_scoring_path")
    if path:
        out += [f"Label scoring path: {path}.", ""]
    for key, what in (("target", "label scoring (constrained-decoding normalisation, the default)"),
                      ("target_vocab", "label scoring (full-vocabulary normalisation)")):
        if key in res:
            t = res[key]
            out += [f"Target ({t['definition']}), {what}: speed-up {t['speedup']}x, accuracy difference "
                    f"{t['accuracy_delta']:+.4f}; met: {t['met']}.", ""]
    out += [DECODER_CAVEATS.get(res["benchmark"], ""), ""]
    if res.get("speed_note"):
        out += [res["speed_note"], ""]
    if "target" in res:  # the profile was taken on the Endava batches
        out += [DECODER_SPEED if res["benchmark"] == "endava_tickets" else
                "Where the time goes: see the profile under endava_tickets.", ""]
    if res.get("trained_by"):
        out += [f"The probe, the sequence classifier and the LoRA adapter come from `{res['trained_by']}`; the command "
                "above re-evaluated the saved adapter.", ""]
    if res.get("notes"):
        out += [res["notes"], ""]
    return "\n".join(out)


def renderer(benchmark: str) -> Any:
    """The section renderer of a results file's ``benchmark`` name (None: not shown)."""
    if benchmark.startswith("banking77"):
        return render_banking77
    if benchmark.startswith("deploy_latency") and not benchmark.endswith("_quick"):
        return render_deploy_latency
    if benchmark == "kernel_costs":
        return render_kernel_costs
    if benchmark.startswith("int8_levers"):
        return render_latency_only
    if benchmark.startswith("int8_options"):
        return render_int8_options
    if benchmark in DECODER_CAVEATS:
        return render_decoder_benchmark
    return {"deploy_latency": render_deploy_latency, "int8_latency_cpus": render_int8_latency_cpus,
            "int8_options": render_int8_options, "clinc150_oos": render_clinc150_oos,
            "gsm8k_lengths": render_gsm8k_lengths}.get(benchmark)


def main() -> None:
    sections = [HEADER]
    for path in sorted(RESULTS.glob("*.json")):
        res = json.loads(path.read_text())
        name = str(res.get("benchmark", ""))
        render = renderer(name)
        if render is None:
            continue
        # Each section ends with an empty line; a benchmark's note (how to read it, this run's caveats) follows it.
        sections.append(render(res) + (f"\n{NOTES[name]}\n" if name in NOTES else ""))
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
