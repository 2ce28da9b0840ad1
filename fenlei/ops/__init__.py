"""Experiment operations on top of the fenlei CLI: local sweeps, ablations, model comparison, active learning.

    python cli.py sweep configs/sweeps/quickstart_lr.yaml --count 4        (fenlei.ops.sweep: W&B sweep files, no server)
    python cli.py ablate configs/ablations/quickstart_loss.yaml            (fenlei.ops.ablate: variants x seeds -> table + PNG)
    python cli.py compare RUN_OR_BUNDLE... --data test.jsonl       (fenlei.ops.compare: F1, top-k, latency, size)
    python cli.py al {select,merge} ...                            (fenlei.ops.active_learning: labeling queue)

Each module has ``main(argv) -> int``; errors in user input print one line and return 2. Modules import torch and
Lightning only when a command needs them.
"""
