"""Reproduce BENCHMARKS.md with one command: every benchmark in one fixed order, resumable, then the render.

    flock /tmp/fenlei_cpu.lock python benchmarks/run_all.py --budget smoke    # plumbing check, minutes
    flock /tmp/fenlei_cpu.lock python benchmarks/run_all.py --budget full     # every figure (about a day)
    python benchmarks/run_all.py --budget full --list                          # the plan: steps, durations, state
    flock /tmp/fenlei_cpu.lock python benchmarks/run_all.py --budget full --only deploy_latency int8_levers
    ... --skip chinese_encoders gsm8k_lengths      ... --redo kernel_costs (run again although finished)

Holding the CPU lock is the caller's business: the steps are heavy and run one after another, and a step that takes
``/tmp/fenlei_cpu.lock`` itself (gsm8k_lengths) is told that its caller holds it (``FENLEI_CPU_LOCK_HELD=1``).

Budgets. ``full``: the commands behind BENCHMARKS.md (``STEPS``, each with its expected duration and how that was
had), results in ``benchmarks/results/``, then ``python benchmarks/render.py`` rewrites BENCHMARKS.md. ``smoke``:
the same steps through each script's ``--smoke`` (the tiny random models of the tests, small subsets, one epoch),
results in ``benchmarks/results/smoke/`` marked ``"smoke": true``, rendered to
``benchmarks/results/smoke/BENCHMARKS.smoke.md`` with every figure marked smoke; nothing of it reaches BENCHMARKS.md.

Resuming. After a step exits cleanly, each results file it wrote gets a stamp ``"run_all": {"step", "budget",
"command", "finished", "wall_s", "cpu"}``; a step is finished when all its results files carry the stamp of its
current command (steps without a results file, the fits and exports the benchmarks read, when the state file says
so and their outputs exist), and a finished step is skipped. The state file
``benchmarks/work/run_all/<budget>/state.json`` (written atomically) marks the step that is running; a run killed in
the middle of a step finds it there on the next start, ends what is left of that step's processes (they carry the
attempt's token in their environment), removes a non-resumable step's partial outputs (``clean``) and runs the step
again; a resumable step (``resumable``: chinese_encoders' cells, gsm8k_lengths' configs, decoder_classifiers'
routes and epochs) keeps what it finished.
Logs: ``benchmarks/work/run_all/<budget>/logs/<step>.log``. Exit status 0 when every selected step is finished.

Adding a benchmark is one ``Step`` entry in ``STEPS`` (or one line in ``EXCLUDED`` with the reason);
tests/test_run_all.py fails for a script in benchmarks/ that is in neither.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import LOCK_HELD_ENV  # noqa: E402

BUDGETS = ("smoke", "full")
TOKEN_ENV = "FENLEI_RUN_ALL_TOKEN"  # in every process of a step attempt: how leftovers of a killed run are found


@dataclass(frozen=True)
class Step:
    """One command of the plan. ``args`` follow the Python interpreter (a script, then its options) and may name
    ``{runs}``, ``{work}``, ``{results}`` (the budget's folders) and ``{smoke}`` (the smoke models and data)."""

    name: str
    args: tuple[str, ...]
    minutes: float  # expected wall minutes of the full budget on the project's 2-core CPU
    basis: str  # how ``minutes`` was had: "measured: ..." or "estimated: ..."
    results: tuple[str, ...] = ()  # results files it writes, in the budget's results folder
    outputs: tuple[str, ...] = ()  # for a step without results: the files it leaves (its completion check)
    smoke: Optional[tuple[str, ...]] = ("--smoke",)  # options added in the smoke budget; None: full budget only
    smoke_drop: tuple[str, ...] = ()  # options left out in the smoke budget, each with its values
    smoke_sub: tuple[tuple[str, str], ...] = ()  # (old, new) text replaced in every argument in the smoke budget
    full: bool = True  # False: smoke budget only
    resumable: bool = False  # True: the script resumes itself (finished parts kept); False: rerun from scratch
    clean: tuple[str, ...] = ()  # removed before a non-resumable step runs: what a killed attempt left
    needs: tuple[str, ...] = ()  # earlier steps whose outputs it reads
    accept: tuple[int, ...] = (0,)  # exit statuses that mean "ran to the end"
    note: str = ""


FIT_SMOKE = ("--model.init_args.pretrained={smoke}/models/encoder", "--trainer.max_epochs=1",
             "--data.init_args.max_length=32")
LEVERS = ("{work}/deploy/naive/model_int8.onnx", "{work}/deploy/bundle_before_rewrites/model_int8.onnx",
          "{work}/deploy/bundle_rewrites_only/model_int8.onnx", "{work}/deploy/bundle_dynamic/model_int8.onnx",
          "--tokenizer", "{work}/deploy/bundle_dynamic", "--n", "600", "--latency_only", "--threads", "2",
          "--rounds", "10", "--labels", "naive", "before_rewrites", "rewrites_only", "default")
LEVER_EXPORT = ("--keep_head_fp32", "false", "--gelu_approximation", "false", "--reduce_range", "true", "--force", "true")
E5_EXPORT = ("--no_static", "--max_size_mb", "60", "--force_export", "--export_args", "--vocab_scripts", "auto",
             "--embedding_quantization", "int4")
# The smoke encoder is a tiny BERT, whose fused graph reads its word table inside EmbedLayerNormalization: the
# vocabulary trim finds no word-embedding Gather there (it needs an XLM-R graph like e5's), so the smoke run of the
# e5 deploy steps exports without the trim and the 4-bit table.
E5_SMOKE_DROP = ("--vocab_scripts", "--embedding_quantization")
E5_NOTE = "smoke: exported without --vocab_scripts/--embedding_quantization (the tiny BERT's fused graph has no plain word Gather)"

# decoder_classifiers.py resumes an interrupted run of the same settings (its results file says "complete": false).
DECODER_RESUME = "finished routes are kept and a route cut short continues from its last epoch checkpoint"

# Endava's four urgency codes as the three levels of the prior work (configs/decoder/gemma3_270m_multifield.yaml).
URGENCY_3_LEVELS = json.dumps({"urgency": {"0": "high", "1": "high", "2": "medium", "3": "low"}})

STEPS: tuple[Step, ...] = (
    Step("smoke_fixtures", ("benchmarks/common.py",), 0, "smoke only", full=False, smoke=(),
         outputs=("{smoke}/models/encoder/config.json", "{smoke}/models/decoder/config.json"),
         note="the tiny random models and data subsets the smoke fits and exports name by path"),
    # ---------------------------------------------------------------- training: throughput and accuracy
    Step("banking77_minilm", ("benchmarks/banking77.py", "--config", "configs/bench/banking77_minilm.yaml",
                              "--name", "banking77_minilm"), 45,
         "estimated: banking77_minilm.json's full runs trained 277 s (fenlei) + 1,219 s (HF plain) + 355 s (HF tuned), "
         "plus 2 x 3 throughput runs of 120 steps, tests and start-up (the script's docstring: about 45 minutes)",
         results=("banking77_minilm.json",), clean=("{work}/banking77_minilm",)),
    Step("banking77_mpnet", ("benchmarks/banking77.py", "--config", "configs/bench/banking77_mpnet.yaml", "--name",
                             "banking77_mpnet", "--skip_hf", "--repeats", "1", "--throughput_steps", "40"), 17,
         "estimated: banking77_mpnet.json's full fenlei run trained 892 s, plus 40 throughput steps at 26 samples/s, "
         "the test and start-up", results=("banking77_mpnet.json",), clean=("{work}/banking77_mpnet",)),
    # ---------------------------------------------------------------- numeric targets
    Step("seed_spread", ("benchmarks/seed_spread.py",), 50,
         "measured on the AMX Xeon of 2026-12-03, per seed: Banking77 MiniLM fit + test 3.6 min and MPNet 8.6 min "
         "(bf16-mixed), CLINC150 fit + export + scoring 4 min (fp32); 3 seeds each",
         results=("seed_spread.json",), resumable=True,
         note="a seed already in the results file is kept; a killed fit resumes from its last.ckpt"),
    Step("gsm8k_lengths", ("benchmarks/gsm8k_lengths.py", "--seeds", "1", "2", "3"), 140,
         "measured: seeds 2 and 3 (13 configs each, the configs' own budget, fit + gsm8k and alpaca_eval tests) took "
         "91 min on the AMX Xeon of 2026-12-03 in bf16-mixed; a CPU without native bf16 trains in fp32, several "
         "times slower", results=("gsm8k_lengths.json",), resumable=True),
    # ---------------------------------------------------------------- decoder LMs as classifiers
    Step("endava_tickets", ("benchmarks/decoder_classifiers.py", "--train_size", "240", "--test_size", "120",
                            "--max_length", "48", "--epochs", "3"), 25,
         "estimated: endava_tickets.json's LoRA generative training 865 s, LoRA seq-cls 143 s, probe 3 s, plus three "
         "decoding passes over 120 test tickets", results=("endava_tickets.json",), resumable=True,
         note=DECODER_RESUME + "; the figures of 2026-11-27 were re-evaluated with --reuse_adapter --parts "
         "generative after this command"),
    Step("online_shopping", ("benchmarks/decoder_classifiers.py", "--dataset", "online_shopping", "--train_size", "400",
                             "--test_size", "200", "--max_length", "64"), 15,
         "estimated: online_shopping.json's LoRA generative training 478 s, LoRA seq-cls 90 s, probe 103 s, plus three "
         "decoding passes over 200 test reviews", results=("online_shopping.json",), resumable=True,
         note=DECODER_RESUME),
    # Issue 15's real budgets: every route (probe, LoRA seq-cls, LoRA generative, prefix tuning), all of Endava's
    # training tickets with urgency in three levels, 5,000 online_shopping reviews; their own results and work
    # folders, so that the subset figures above stay what their commands made until these have run.
    Step("endava_tickets_full", ("benchmarks/decoder_classifiers.py", "--train_size", "4327", "--test_size", "1000",
                                 "--max_length", "64", "--epochs", "3", "--parts", "probe", "generative", "seqcls",
                                 "prefix", "--label_maps", URGENCY_3_LEVELS, "--out",
                                 "{results}/endava_tickets_full.json", "--work_dir", "{work}/decoder_endava_full"), 600,
         "estimated from endava_tickets.json (fp32, AVX2): LoRA generative 1.2 s per training text-epoch (13,000 "
         "here: 4.3 h), prefix tuning about as long, seq-cls 0.2 s (45 min), then label scoring twice and free "
         "generation over 1,000 test tickets (about 30 min); with native bf16 about half",
         results=("endava_tickets_full.json",), resumable=True, note=DECODER_RESUME),
    Step("online_shopping_full", ("benchmarks/decoder_classifiers.py", "--dataset", "online_shopping", "--train_size",
                                  "5000", "--test_size", "1000", "--max_length", "64", "--parts", "probe", "generative",
                                  "seqcls", "prefix", "--out", "{results}/online_shopping_full.json", "--work_dir",
                                  "{work}/decoder_online_shopping_full"), 260,
         "estimated from online_shopping.json (one epoch): LoRA generative 1.2 s per training text (100 min), prefix "
         "tuning about as long, seq-cls 0.23 s (19 min), the probe's features of 6,000 texts (8 min), decodings of "
         "1,000 test reviews (about 22 min)",
         results=("online_shopping_full.json",), resumable=True, note=DECODER_RESUME),
    # The probe-first cascade at the script's own subset size (600 train / 300 test texts, one epoch of the LoRA
    # reviewer): a results file per dataset, so that each step has its own stamp.
    Step("cascade_endava", ("benchmarks/cascade.py", "--dataset", "endava", "--out", "{results}/cascade_endava.json"),
         15, "estimated: decoder_train_speed.json's fenlei generative LoRA trained 2.6 samples/s in bf16 (600 texts, "
         "one epoch: 4 min; fp32 on an AVX2-only CPU about twice that), the probe's features of 900 texts, then label "
         "scoring of 300 test texts four times (each route alone, the cascade over all fields and over the first)",
         results=("cascade_endava.json",), clean=("{work}/cascade_endava",)),
    Step("cascade_online_shopping", ("benchmarks/cascade.py", "--dataset", "online_shopping", "--out",
                                     "{results}/cascade_online_shopping.json"), 15,
         "estimated: as cascade_endava (two fields instead of three)", results=("cascade_online_shopping.json",),
         clean=("{work}/cascade_online_shopping",)),
    Step("probe_layer_sweep", ("benchmarks/probe_layer_sweep.py", "--texts", "1000"), 2,
         "estimated: MiniLM features of 1,000 texts at max_length 64, eleven passes (a warm-up, then two rounds of "
         "one pass for four layers and four passes of one layer), a few hundred texts/s each",
         results=("probe_layer_sweep.json",), accept=(0, 1),
         note="exit status 1 means the two routes' features differ: that is a result (the section says so)"),
    Step("decoder_train_speed", ("benchmarks/decoder_train_speed.py", "--dataset", "online_shopping", "--train_size",
                                 "800", "--test_size", "200", "--max_length", "64"), 30,
         "measured: 29 min on the AMX Xeon of 2026-12-03 (bf16 for fenlei; the peer in fp32): 800 texts, one epoch, "
         "per system and task, plus label scoring of 200 test reviews by both; a CPU without native bf16 is slower",
         results=("decoder_train_speed.json",),
         resumable=True, note="cells already in the results file with the same settings are kept (--fresh redoes them)"),
    # ---------------------------------------------------------------- Chinese encoders
    Step("chinese_encoders", ("benchmarks/chinese_encoders.py",), 420,
         "estimated: chinese_encoders.json's cells took 1,000-1,150 s per TNEWS e5 seed on the Xeon in fp32 (475-525 s "
         "on the EPYC in bf16) and 375-440 s per online_shopping seed; 36 e5 cells, two gemma probes (397-441 s), two "
         "LoRA seq-cls cells (898 s on online_shopping; TNEWS has twice the texts): 5.5 h (bf16) to 8 h (fp32)",
         results=("chinese_encoders.json",), smoke=("--smoke", "--recipes", "ce", "--seeds", "1"), resumable=True,
         note="cells already in the results file are kept (the script never reruns a finished cell)"),
    # ---------------------------------------------------------------- calibration and out-of-scope rejection
    Step("clinc150_oos", ("benchmarks/clinc150_oos.py", "--run_dir", "{runs}/clinc150_minilm"), 10,
         "estimated: the fit (3 epochs over 15,000 texts, fp32: about banking77_minilm's 277 s for 45,000 sample-"
         "epochs, at fp32 speed) + the recorded 46 s export + INT8 scoring of 10,500 texts",
         results=("clinc150_oos.json",), resumable=True, note="a finished fit in the run folder is reused"),
    # ---------------------------------------------------------------- hyperparameter search
    Step("sweep_search", ("benchmarks/sweep_search.py", "--count", "8", "--seed", "0"), 17,
         "measured: sweep_search.json's two sweeps of 8 quickstart trials took 1,015 s on the AMD EPYC family 26 of "
         "2026-12-02", results=("sweep_search.json",), smoke=("--smoke", "--count", "2"), smoke_drop=("--count",),
         note="not resumable by design: both sweeps start afresh, so that their wall times are whole sweeps"),
    # ---------------------------------------------------------------- deployment: MiniLM
    Step("train_banking77_minilm", ("cli.py", "fit", "--config", "configs/bench/banking77_minilm.yaml",
                                    "--trainer.default_root_dir={runs}/banking77_minilm", "--wandb.mode=disabled"), 6,
         "estimated: banking77_minilm.json's fenlei full run (the same config) trained 277 s, plus validation and "
         "start-up", outputs=("{runs}/banking77_minilm/run_summary.json",),
         smoke=(*FIT_SMOKE, "--data.init_args.data_dir={smoke}/data/banking77"), needs=("smoke_fixtures",),
         note="fenlei fit moves an earlier run in the folder to previous/"),
    Step("deploy_latency", ("benchmarks/deploy_latency.py", "--run_dir", "{runs}/banking77_minilm", "--work_dir",
                            "{work}/deploy"), 10,
         "estimated: deploy_latency.json's two exports took 46 + 73 s; six engines over 3,080 test texts, 600 batch-1 "
         "requests each, and 3 x 300 service requests", results=("deploy_latency.json",),
         needs=("train_banking77_minilm",)),
    Step("deploy_latency_rerun", ("benchmarks/deploy_latency.py", "--run_dir", "{runs}/banking77_minilm", "--work_dir",
                                  "{work}/deploy", "--skip_export", "--name", "deploy_latency_rerun"), 8,
         "estimated: deploy_latency without its two exports", results=("deploy_latency_rerun.json",),
         needs=("deploy_latency",), note="the same bundles measured again: the section's spread across runs"),
    Step("deploy_latency_interleaved", ("benchmarks/deploy_latency.py", "--run_dir", "{runs}/banking77_minilm",
                                        "--work_dir", "{work}/deploy", "--skip_export", "--name",
                                        "deploy_latency_interleaved"), 8,
         "estimated: deploy_latency without its two exports", results=("deploy_latency_interleaved.json",),
         needs=("deploy_latency",), note="a third measurement of the same bundles"),
    Step("export_before_rewrites", ("cli.py", "export", "--ckpt_path", "{runs}/banking77_minilm", "--out",
                                    "{work}/deploy/bundle_before_rewrites", "--overwrite", "--threads", "2",
                                    "--no_cpu_rewrites", "true", *LEVER_EXPORT), 1,
         "estimated: deploy_latency.json's dynamic export took 46 s", smoke=(),
         outputs=("{work}/deploy/bundle_before_rewrites/metadata.json",), needs=("train_banking77_minilm",)),
    Step("export_rewrites_only", ("cli.py", "export", "--ckpt_path", "{runs}/banking77_minilm", "--out",
                                  "{work}/deploy/bundle_rewrites_only", "--overwrite", "--threads", "2", *LEVER_EXPORT), 1,
         "estimated: deploy_latency.json's dynamic export took 46 s", smoke=(),
         outputs=("{work}/deploy/bundle_rewrites_only/metadata.json",), needs=("train_banking77_minilm",)),
    Step("int8_levers", ("benchmarks/profile_onnx.py", *LEVERS, "--name", "int8_levers", "--out",
                         "{results}/int8_levers.json"), 2,
         "estimated: 4 models x 600 batch-1 requests of a few ms, in 10 blocks", results=("int8_levers.json",),
         smoke=("--n", "40", "--rounds", "2", "--smoke"),
         needs=("deploy_latency", "export_before_rewrites", "export_rewrites_only")),
    Step("int8_levers_repeat", ("benchmarks/profile_onnx.py", *LEVERS, "--name", "int8_levers_repeat", "--out",
                                "{results}/int8_levers_repeat.json"), 2,
         "estimated: as int8_levers", results=("int8_levers_repeat.json",), smoke=("--n", "40", "--rounds", "2", "--smoke"),
         needs=("int8_levers",), note="the same command right after: the section's run-to-run spread"),
    Step("int8_options_rw", ("benchmarks/int8_options.py", "--run_dir", "{runs}/banking77_minilm", "--name",
                             "int8_options_rw", "--variants", "per_channel_reduce_range",
                             "per_channel_reduce_range_keep_head", "per_channel", "per_channel_u8u8",
                             "per_channel_keep_embeddings", "--latency_n", "200"), 5,
         "estimated: one export (46 s), 5 variants quantized and scored twice on 1,003 validation texts, 200 batch-1 "
         "requests each", results=("int8_options_rw.json",), clean=("{work}/int8_options_rw",),
         needs=("train_banking77_minilm",)),
    Step("int8_options", ("benchmarks/int8_options.py", "--run_dir", "{runs}/banking77_minilm", "--export_args",
                          "--no_cpu_rewrites", "true"), 10,
         "estimated: one export (46 s), 14 variants quantized and scored twice on 1,003 validation texts, 300 batch-1 "
         "requests each", results=("int8_options.json",), clean=("{work}/int8_options",),
         needs=("train_banking77_minilm",), note="the graph before the CPU rewrites, as the section says"),
    # ---------------------------------------------------------------- deployment: MPNet
    Step("train_banking77_mpnet", ("cli.py", "fit", "--config", "configs/bench/banking77_mpnet.yaml",
                                   "--trainer.max_epochs=2", "--trainer.default_root_dir={runs}/banking77_mpnet",
                                   "--wandb.mode=disabled"), 12,
         "estimated: banking77_mpnet.json's fenlei run trained 3 epochs in 892 s; this one 2 (deploy_latency_mpnet.md)",
         outputs=("{runs}/banking77_mpnet/run_summary.json",),
         smoke=(*FIT_SMOKE, "--data.init_args.data_dir={smoke}/data/banking77"), needs=("smoke_fixtures",)),
    Step("deploy_latency_mpnet", ("benchmarks/deploy_latency.py", "--run_dir", "{runs}/banking77_mpnet", "--name",
                                  "deploy_latency_mpnet", "--work_dir", "{work}/deploy_mpnet"), 25,
         "estimated: deploy_latency_mpnet.json's exports took 279 + 423 s; six MPNet engines over 3,080 texts",
         results=("deploy_latency_mpnet.json",), needs=("train_banking77_mpnet",)),
    Step("int8_options_mpnet", ("benchmarks/int8_options.py", "--run_dir", "{runs}/banking77_mpnet", "--name",
                                "int8_options_mpnet", "--latency_n", "150", "--rounds", "3", "--variants",
                                "per_channel_reduce_range_keep_head", "per_channel_u8u8_keep_head",
                                "per_channel_reduce_range_keep_ffn_out", "per_channel_u8u8_keep_ffn_out",
                                "per_channel_keep_ffn_out"), 12,
         "estimated: one MPNet export (279 s), 5 variants scored twice on 1,003 texts", results=("int8_options_mpnet.json",),
         clean=("{work}/int8_options_mpnet",), needs=("train_banking77_mpnet",)),
    # ---------------------------------------------------------------- deployment: multilingual e5
    Step("train_zh_e5", ("cli.py", "fit", "--config", "configs/zh/e5_ce.yaml", "--data.init_args.data_dir=data/demo_tickets_zh",
                         "--trainer.precision=32-true", "--trainer.default_root_dir={runs}/zh_e5", "--wandb.mode=disabled"),
         3, "estimated: chinese_encoders.json's TNEWS e5/ce cells (4 epochs over 10,000 texts, fp32) took about 1,050 s; "
         "838 texts take a twelfth", outputs=("{runs}/zh_e5/run_summary.json",), smoke=FIT_SMOKE,
         needs=("smoke_fixtures",),
         note="reconstructed from deploy_latency_e5_zh.md (e5-small, demo_tickets_zh, 4 epochs, max_length 64, batch "
              "32, lr 1e-4 / head 3e-3, 32-true): the original fit's command was not recorded"),
    Step("deploy_latency_e5_zh", ("benchmarks/deploy_latency.py", "--run_dir", "{runs}/zh_e5", "--test_file",
                                  "data/demo_tickets_zh/test.jsonl", "--name", "deploy_latency_e5_zh", "--work_dir",
                                  "{work}/deploy_e5_zh", *E5_EXPORT, "--no-reduce_range", "--no-keep_ffn_out_fp32"), 5,
         "estimated: deploy_latency_e5_zh.json's export took 67 s; 179 test texts", results=("deploy_latency_e5_zh.json",),
         needs=("train_zh_e5",), smoke_drop=E5_SMOKE_DROP, note=E5_NOTE),
    Step("deploy_latency_e5_shopping", ("benchmarks/deploy_latency.py", "--run_dir",
                                        "{work}/chinese_encoders/online_shopping/e5/invlog_weights/seed2/run",
                                        "--test_file", "{work}/chinese_encoders/online_shopping/data/test.jsonl",
                                        "--name", "deploy_latency_e5_shopping", "--work_dir", "{work}/deploy_e5_shopping",
                                        "--serve_requests", "100", *E5_EXPORT, "--eval_file",
                                        "{work}/chinese_encoders/online_shopping/data/heldout.jsonl"), 10,
         "measured: deploy_latency_e5_shopping.json's export took 362 s (four INT8 attempts gated on 5,000 held-out "
         "texts), the whole step about 10 min on the AMX Xeon of 2026-12-03",
         results=("deploy_latency_e5_shopping.json",), needs=("chinese_encoders",), smoke_drop=E5_SMOKE_DROP,
         smoke_sub=(("invlog_weights/seed2", "ce/seed1"),),
         note=E5_NOTE + "; the smoke chinese_encoders step fits only the ce/seed1 cell, so smoke exports that one"),
    # ---------------------------------------------------------------- deployment: a decoder classifier
    Step("train_gemma_seqcls_shopping", ("cli.py", "fit", "--config", "configs/decoder/gemma3_270m_seqcls.yaml",
                                         "--data.init_args.data_dir={work}/chinese_encoders/online_shopping/data",
                                         "--data.init_args.max_length=64", "--data.init_args.val_file=validation",
                                         "--trainer.default_root_dir={runs}/gemma_seqcls_shopping",
                                         "--trainer.enable_progress_bar=false", "--wandb.mode=disabled"), 30,
         "estimated: chinese_encoders.json's online_shopping gemma/lora_seqcls cell (the same config, data and "
         "max_length: 5,000 texts, one epoch) fitted in 763 s at 7.1 samples/s on the AVX-512 EPYC; about 3 "
         "samples/s on an AVX2-only CPU", outputs=("{runs}/gemma_seqcls_shopping/run_summary.json",),
         smoke=("--model.init_args.pretrained={smoke}/models/decoder", "--data.init_args.tokenizer={smoke}/models/decoder",
                "--trainer.max_epochs=1", "--data.init_args.max_length=32"),
         needs=("chinese_encoders",), note="the LoRA seq-cls cell of chinese_encoders, refitted into a run folder the "
                                           "deployment step can export (the cell's own folder is a work folder)"),
    Step("deploy_latency_gemma_seqcls", ("benchmarks/deploy_latency.py", "--run_dir", "{runs}/gemma_seqcls_shopping",
                                         "--test_file", "{work}/chinese_encoders/online_shopping/data/test.jsonl",
                                         "--name", "deploy_latency_gemma_seqcls", "--work_dir", "{work}/deploy_gemma_seqcls",
                                         "--no_static", "--latency_n", "200", "--rounds", "10", "--throughput_n", "256",
                                         "--serve_requests", "60", "--force_export"), 35,
         "estimated: gemma-3-270m exports (1.07 GB fp32 graph) and INT8 attempts gated on 1,001 validation texts, "
         "five engines over 1,999 test texts, 200 batch-1 requests each",
         results=("deploy_latency_gemma_seqcls.json",), needs=("train_gemma_seqcls_shopping",),
         note="--force_export: the bundle is measured even where the gate refuses every INT8 attempt; the results "
              "file records the gate's verdict"),
    # ---------------------------------------------------------------- deployment: kernels and the service
    Step("kernel_costs", ("benchmarks/kernel_costs.py",), 1,
         "estimated: 6 chains x 1,000 runs of microseconds, at 1 and 2 threads", results=("kernel_costs.json",)),
    Step("train_serve_minilm", ("cli.py", "fit", "--config", "configs/quickstart.yaml", "--trainer.max_epochs=2",
                                "--trainer.precision=32-true", "--trainer.default_root_dir={runs}/serve_minilm",
                                "--wandb.mode=disabled"), 3,
         "measured: the fit behind serve_load_minilm.json took 90 s (run_summary.json fit_seconds), plus start-up", smoke=FIT_SMOKE,
         outputs=("{runs}/serve_minilm/run_summary.json",), needs=("smoke_fixtures",),
         note="the model behind the service load test: its accuracy does not matter, its size and max_length do"),
    Step("export_serve_minilm", ("cli.py", "export", "--ckpt_path", "{runs}/serve_minilm", "--out",
                                 "{work}/serve_minilm/bundle", "--overwrite", "true"), 2,
         "estimated: deploy_latency.json's dynamic MiniLM export took 46 s, plus the parity gate", smoke=(),
         outputs=("{work}/serve_minilm/bundle/metadata.json",), needs=("train_serve_minilm",)),
    Step("serve_load_minilm", ("benchmarks/serve_load.py", "--bundle", "{work}/serve_minilm/bundle", "--texts",
                               "data/demo_tickets/test.jsonl", "--name", "serve_load_minilm"), 10,
         "measured: serve_load_minilm.json's run took 573 s (its wall_s); its smoke budget 22 s", results=("serve_load_minilm.json",),
         needs=("export_serve_minilm",), accept=(0, 1),
         note="exit status 1 means a fault case did not behave as expected: that is a result (the table shows it)"),
    Step("serve_load", ("benchmarks/serve_load.py",), 2,
         "measured: serve_load.json's run took 90 s (its wall_s)", results=("serve_load.json",), accept=(0, 1),
         note="the tiny committed fixture bundle: the HTTP side and the batcher with almost no model time"),
    Step("hostile_requests", ("benchmarks/hostile_requests.py",), 2,
         "measured: hostile_requests.json's cases took 26 s, plus the service's start", results=("hostile_requests.json",),
         accept=(0, 1), note="exit status 1 means a case did not behave as expected: that is a result (the table shows it)"),
    # ---------------------------------------------------------------- data tools
    Step("label_noise", ("benchmarks/label_noise.py",), 15,
         "estimated: one out-of-fold pass (5 TF-IDF + logistic regression fits) took 135 s on banking77 train; four "
         "of them (clean + 3 noise seeds), one on TNEWS train and three proxy fits",
         results=("label_noise.json",),
         note="detection only; the e5 retrain cells (--retrain, hours) are kept in the results file once run"),
)

# benchmarks/*.py that are not steps, and why (tests/test_run_all.py checks that every script is one or the other).
EXCLUDED: dict[str, str] = {
    "common.py": "helpers shared by the scripts (run as a step only to build the smoke fixtures)",
    "render.py": "renders BENCHMARKS.md from the results; run_all runs it after the steps",
    "run_all.py": "this driver",
    "hf_trainer_baseline.py": "the HF Trainer baseline that banking77.py runs itself; writes no results file",
    "hf_peft_peer.py": "the HF Trainer + PEFT peer that decoder_train_speed.py runs itself; writes no results file",
    "int8_parts.py": "exploratory: prints a table for a bundle given by path, writes no results file",
    "profile_label_scoring.py": "exploratory: prints where label scoring's time goes, writes no results file",
}
# Results files rendered in BENCHMARKS.md that no step reproduces, and why.
NOT_REPRODUCED: dict[str, str] = {
    "int8_latency_cpus.json": "the same two INT8 files timed on two different machines; one machine cannot rerun it",
}


# ---------------------------------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    """Where one budget's steps read and write, relative to ``root`` (the commands' working directory)."""

    root: Path
    budget: str

    @property
    def results(self) -> Path:
        return self.root / "benchmarks" / "results" / ("smoke" if self.budget == "smoke" else "")

    @property
    def work(self) -> Path:
        return self.root / "benchmarks" / "work" / ("smoke" if self.budget == "smoke" else "")

    @property
    def runs(self) -> Path:
        return self.work / "runs" if self.budget == "smoke" else self.root / "runs"

    @property
    def smoke(self) -> Path:
        return self.root / "benchmarks" / "work" / "smoke"

    @property
    def state_dir(self) -> Path:
        return self.root / "benchmarks" / "work" / "run_all" / self.budget

    def expand(self, text: str) -> str:
        # Only these four names are replaced (not str.format): an argument may hold other braces, such as JSON.
        names = {"runs": self.runs, "work": self.work, "results": self.results, "smoke": self.smoke}
        for name, path in names.items():
            text = text.replace("{" + name + "}", os.path.relpath(path, self.root))
        return text

    def rendered(self) -> Path:
        return self.results / "BENCHMARKS.smoke.md" if self.budget == "smoke" else self.root / "BENCHMARKS.md"


def in_budget(step: Step, budget: str) -> bool:
    return step.smoke is not None if budget == "smoke" else step.full


def step_args(step: Step, paths: Paths) -> list[str]:
    """The step's arguments at the budget of ``paths``; the smoke options go before a trailing pass-through option
    (``--export_args``/``--extra`` take everything after them)."""
    args = list(step.args)
    if paths.budget == "smoke":
        args = drop_options(args, step.smoke_drop)
        for old, new in step.smoke_sub:
            args = [a.replace(old, new) for a in args]
        extra = list(step.smoke or ())
        cut = next((i for i, a in enumerate(args) if a in ("--export_args", "--extra")), len(args))
        args = args[:cut] + extra + args[cut:]
    return [paths.expand(a) for a in args]


def drop_options(args: list[str], names: Sequence[str]) -> list[str]:
    """``args`` without the options ``names`` and their values (the words up to the next option); a pass-through
    option left with nothing after it goes too."""
    out: list[str] = []
    dropping = False
    for arg in args:
        if arg.startswith("--"):
            dropping = arg in names
        if not dropping:
            out.append(arg)
    return out[:-1] if out and out[-1] in ("--export_args", "--extra") else out


def command_text(step: Step, paths: Paths) -> str:
    return "python " + shlex.join(step_args(step, paths))


# ---------------------------------------------------------------------------------------------------- state


class State:
    """``state.json`` of one budget: per step its status (running, done, failed), command, attempt token, times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"steps": {}}

    def step(self, name: str) -> dict[str, Any]:
        return self.data["steps"].get(name, {})

    def update(self, name: str, **fields: Any) -> None:
        from fenlei.io import atomic_write_json

        self.data["steps"][name] = {**self.step(name), **fields}
        atomic_write_json(self.path, self.data)


def read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stamped(path: Path, step: Step, paths: Paths) -> bool:
    stamp = (read_json(path) or {}).get("run_all") or {}
    return (stamp.get("step"), stamp.get("budget"), stamp.get("command")) == (step.name, paths.budget,
                                                                              command_text(step, paths))


def set_stamp(path: Path, stamp: Optional[dict[str, Any]]) -> None:
    """Write (or with None remove) the ``run_all`` stamp of a results file, atomically."""
    from fenlei.io import atomic_write_json

    data = read_json(path)
    if data is None or (stamp is None and "run_all" not in data):
        return
    data.pop("run_all", None)
    if stamp is not None:
        data["run_all"] = stamp
    atomic_write_json(path, data)


def finished(step: Step, paths: Paths, state: State) -> bool:
    if step.results:
        return all(stamped(paths.results / r, step, paths) for r in step.results)
    record = state.step(step.name)
    return (record.get("status") == "done" and record.get("command") == command_text(step, paths)
            and all((paths.root / paths.expand(o)).exists() for o in step.outputs))


# ---------------------------------------------------------------------------------------------------- processes


def leftover_pids(token: str) -> list[int]:
    """Live processes whose environment carries this attempt's token (this user's; others cannot be read)."""
    needle = f"{TOKEN_ENV}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def end_leftovers(token: str, grace_s: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, to what is left of a killed attempt; returns the pids found."""
    pids = leftover_pids(token)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and leftover_pids(token):
            time.sleep(0.2)
        if not leftover_pids(token):
            break
    return pids


def _die_with_parent() -> None:
    """In the step's process: SIGTERM when run_all dies, however it dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Interrupted(Exception):
    pass


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


def run_process(argv: list[str], cwd: Path, env: dict[str, str], log: Path, echo: bool) -> int:
    """Run one step in its own process group with its output in ``log`` (and on stdout with ``echo``). Interrupted,
    it ends the whole group before passing the interruption on."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=_die_with_parent, text=True, errors="replace")
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                handle.write(line)
                handle.flush()
                if echo:
                    sys.stdout.write(line)
            return proc.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            raise


@contextlib.contextmanager
def budget_lock(paths: Paths) -> Iterator[None]:
    """One run_all per budget and checkout at a time (the kernel frees the lock however the holder ends)."""
    paths.state_dir.mkdir(parents=True, exist_ok=True)
    with (paths.state_dir / "lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise SystemExit(f"run_all.py: another run_all --budget {paths.budget} holds {paths.state_dir / 'lock'} "
                             f"({handle.read().strip() or 'pid unknown'})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        yield


# ---------------------------------------------------------------------------------------------------- the run


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def prepare_restart(step: Step, paths: Paths, state: State) -> None:
    """Before a step runs: end what a killed earlier attempt left running, remove a non-resumable step's partial
    outputs, and drop stale stamps (a step that runs is finished only when it exits cleanly)."""
    record = state.step(step.name)
    if record.get("status") == "running" and record.get("token"):
        ended = end_leftovers(record["token"])
        say(f"{step.name}: the attempt of {record.get('started', '?')} was killed"
            + (f"; ended its leftover processes {ended}" if ended else "") + ("; it resumes" if step.resumable else
                                                                                 "; it runs again from scratch"))
    if not step.resumable:
        for pattern in step.clean:
            target = paths.root / paths.expand(pattern)
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    for name in step.results:
        set_stamp(paths.results / name, None)


def run_step(step: Step, paths: Paths, state: State, echo: bool) -> bool:
    command = command_text(step, paths)
    prepare_restart(step, paths, state)
    token = uuid.uuid4().hex
    log = paths.state_dir / "logs" / f"{step.name}.log"
    attempt = int(state.step(step.name).get("attempt", 0)) + 1
    started_iso = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    state.update(step.name, status="running", command=command, token=token, started=started_iso, attempt=attempt,
                 log=os.path.relpath(log, paths.root), returncode=None)
    say(f"{step.name}: {command}  (log {os.path.relpath(log, paths.root)})")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", LOCK_HELD_ENV: "1", TOKEN_ENV: token,
           "PYTHONPATH": os.pathsep.join([str(paths.root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.time()
    rc = run_process([sys.executable, *step_args(step, paths)], paths.root, env, log, echo)
    wall = round(time.time() - started, 1)
    missing = [r for r in step.results if not (paths.results / r).is_file()
               or (paths.results / r).stat().st_mtime < started - 1]
    missing += [o for o in step.outputs if not (paths.root / paths.expand(o)).exists()]
    if rc not in step.accept or missing:
        why = f"exit status {rc}" if rc not in step.accept else f"did not write {', '.join(missing)}"
        state.update(step.name, status="failed", returncode=rc, wall_s=wall, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        say(f"{step.name}: FAILED ({why}) after {wall:.0f} s; the log's end:\n{tail}")
        return False
    from fenlei.cpu import cpu_record

    finished_iso = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for name in step.results:
        set_stamp(paths.results / name, {"step": step.name, "budget": paths.budget, "command": command,
                                         "finished": finished_iso, "wall_s": wall, "cpu": cpu_record()})
    state.update(step.name, status="done", returncode=rc, wall_s=wall, finished=finished_iso)
    say(f"{step.name}: done in {wall:.0f} s" + (f" (exit status {rc}, accepted: {step.note})" if rc else ""))
    return True


def select(steps: Sequence[Step], budget: str, only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Step]:
    names = {s.name for s in steps}
    unknown = sorted((set(only) | set(skip)) - names)
    if unknown:
        raise SystemExit(f"run_all.py: unknown step(s) {', '.join(unknown)}; --list shows them")
    return [s for s in steps if in_budget(s, budget) and (not only or s.name in only) and s.name not in skip]


def run(steps: Sequence[Step], paths: Paths, only: Sequence[str] = (), skip: Sequence[str] = (),
        redo: Sequence[str] = (), render: bool = True, echo: bool = False) -> int:
    """Run the selected steps of ``steps`` in their order at ``paths.budget``; 0 when all are finished."""
    chosen = select(steps, paths.budget, only, skip)
    by_name = {s.name: s for s in steps}
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    started = time.time()
    failed: list[str] = []
    try:
        with budget_lock(paths):
            state = State(paths.state_dir / "state.json")
            for step in chosen:
                if step.name not in redo and finished(step, paths, state):
                    say(f"{step.name}: finished earlier, skipped")
                    continue
                blocked = [n for n in step.needs if n in by_name and in_budget(by_name[n], paths.budget)
                           and not finished(by_name[n], paths, state)]
                if blocked:
                    say(f"{step.name}: not run, it needs {', '.join(blocked)} (not finished)")
                    failed.append(step.name)
                    continue
                if not run_step(step, paths, state, echo):
                    failed.append(step.name)
            if render:
                render_cmd = [sys.executable, "benchmarks/render.py"]
                if paths.budget == "smoke":
                    render_cmd += ["--results", os.path.relpath(paths.results, paths.root),
                                   "--out", os.path.relpath(paths.rendered(), paths.root)]
                proc = subprocess.run(render_cmd, cwd=paths.root)
                say(f"rendered {os.path.relpath(paths.rendered(), paths.root)}" if proc.returncode == 0
                    else f"render.py failed ({proc.returncode})")
                if proc.returncode != 0:
                    failed.append("render")
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    from fenlei.cpu import read_cpu

    cpu = read_cpu()
    flags = [f for f in ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in cpu.flags]
    say(f"{paths.budget}: {len(chosen) - len(failed)} of {len(chosen)} steps finished, {time.time() - started:.0f} s "
        f"wall, CPU {cpu.model} ({', '.join(flags) or 'no VNNI, bf16 or AMX flags'})"
        + (f"; not finished: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def plan(steps: Sequence[Step], paths: Paths) -> str:
    """The ``--list`` table: order, step, state, expected full-budget minutes and their basis, command."""
    state = State(paths.state_dir / "state.json")
    lines = [f"budget {paths.budget}: results in {os.path.relpath(paths.results, paths.root)}/, rendered to "
             f"{os.path.relpath(paths.rendered(), paths.root)}", ""]
    total = 0.0
    for i, step in enumerate(s for s in steps if in_budget(s, paths.budget)):
        record = state.step(step.name)
        status = "finished" if finished(step, paths, state) else {"running": "killed (restarts)", "failed": "failed"}.get(
            record.get("status"), "to run")
        last = f", last {record['wall_s'] / 60:.1f} min" if record.get("wall_s") is not None else ""
        total += step.minutes
        lines += [f"{i + 1:2d}. {step.name} [{status}{last}]: full budget ~{step.minutes:g} min ({step.basis})",
                  f"    {command_text(step, paths)}"]
        if step.note:
            lines.append(f"    note: {step.note}")
    lines += ["", f"full budget, all steps: ~{total / 60:.1f} h expected on the 2-core CPU"]
    lines += [f"not reproduced: {name} ({why})" for name, why in NOT_REPRODUCED.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="see the module docstring for the "
                                "resume rules", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=BUDGETS, required=True)
    p.add_argument("--only", nargs="+", default=[], metavar="STEP", help="run only these steps (in the plan's order)")
    p.add_argument("--skip", nargs="+", default=[], metavar="STEP", help="leave these steps out")
    p.add_argument("--redo", nargs="+", default=[], metavar="STEP", help="run these again although finished")
    p.add_argument("--list", action="store_true", help="print the plan (steps, state, durations) and stop")
    p.add_argument("--no_render", action="store_true", help="do not re-render after the steps")
    p.add_argument("--echo", action="store_true", help="copy each step's output to stdout (always in its log)")
    args = p.parse_args(argv)
    paths = Paths(REPO, args.budget)
    if args.list:
        select(STEPS, args.budget, args.only, args.skip)  # names checked
        print(plan(STEPS, paths))
        return 0
    try:
        return run(STEPS, paths, args.only, args.skip, args.redo, render=not args.no_render, echo=args.echo)
    except (KeyboardInterrupt, Interrupted) as err:
        say(f"interrupted ({err or 'SIGINT'}): the running step restarts on the next run")
        return 130


if __name__ == "__main__":
    sys.exit(main())
