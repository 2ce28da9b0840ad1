"""benchmarks/serve_load.py's figures (rounds pooled, label agreement by text) and the BENCHMARKS.md sections of
serve_load and sweep_search, on made-up results and on the committed sweep_search.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))

from benchmarks import render  # noqa: E402
from benchmarks.serve_load import agreement, percentile_ms, pooled  # noqa: E402


def client_round(concurrency: int, latencies: list[float], wall: float, labels: list[list], failures: dict) -> dict:
    """What one client process reports (after JSON: label pairs as lists)."""
    return {"concurrency": concurrency, "requests": len(latencies), "failures": failures, "wall_s": wall,
            "latencies": latencies, "labels": labels, "tcp_nodelay": True}


def test_rounds_pool_into_one_level() -> None:
    a = client_round(4, [0.001] * 90 + [0.010] * 10, 1.0, [[0, "x"], [1, "y"]], {})
    b = client_round(4, [0.002] * 100, 3.0, [[0, "x"]], {"503": 2})
    level = pooled([a, b])
    assert level["requests"] == 200 and level["requests_per_s"] == 50.0  # 200 requests over 4 s, not (100 + 33) / 2
    assert level["requests_per_s_rounds"] == [100.0, 33.3]
    assert level["failed"] == 2 and level["failures"] == {"503": 2}
    assert level["p50_ms"] == 2.0 and level["p99_ms"] == 10.0 and level["tcp_nodelay"]
    assert percentile_ms([0.003], 0.95) == 3.0
    agreement([level], {0: "x", 1: "z"})  # by text index, every answer counted
    assert level["label_agreement_vs_unbatched_c1"] == round(2 / 3, 4) and "labels" not in level


def serve_result() -> dict:
    def level(c: int, rps: float) -> dict:
        return {"concurrency": c, "requests": 600, "failed": 0, "failures": {}, "requests_per_s": rps,
                "requests_per_s_rounds": [rps - 1, rps + 1], "p50_ms": 2.0, "p95_ms": 3.0, "p99_ms": 4.0,
                "texts_per_call": 1.5, "label_agreement_vs_unbatched_c1": 1.0}

    settings = [{"setting": name, "command": f"fenlei serve --bundle b {opts}", "levels": [level(1, 100), level(16, r)],
                 "server": {"max_batch_texts": 32, "batch_wait_ms": 2.0, "max_concurrent": 1, "threads": th,
                            "workers": w}, "ratio_top_over_c1": r / 100, "failed": 0}
                for name, opts, r, th, w in (("batched", "", 250.0, None, 1),
                                             ("batched, 2 workers x 1 thread", "--workers 2", 280.0, 1, 2))]
    return {"benchmark": "serve_load_minilm", "command": "python benchmarks/serve_load.py", "date": "2026-12-03",
            "machine": {"cpu": {"model": "Test CPU", "cores": 2, "flags": ["avx2"]}}, "bundle": "b", "texts": "t",
            "requests_per_level": 600, "warmup": 50, "rounds": 2, "levels": [1, 16], "client": "asyncio",
            "settings": settings, "best_setting": "batched, 2 workers x 1 thread",
            "fastest_setting_at_top": "batched, 2 workers x 1 thread",
            "targets": {"c16_over_c1_ge_3x": False, "zero_failures": True},
            "target_values": {"c16_over_c1_ge_3x": 2.8}, "faults": []}


def test_serve_load_section_shows_server_settings_rounds_and_the_target(tmp_path: Path) -> None:
    (tmp_path / "serve_load_minilm.json").write_text(json.dumps(serve_result()))
    render.main(["--results", str(tmp_path), "--out", str(tmp_path / "B.md")])
    text = (tmp_path / "B.md").read_text()
    assert "| batched | 1 x 1 x ORT default; batch ≤ 32 texts, wait 2.0 ms | 16 | 250.0 (249.0, 251.0) |" in text
    assert "| batched, 2 workers x 1 thread | 2 x 1 x 1; batch ≤ 32 texts, wait 2.0 ms |" in text
    assert "measured in 2 rounds in turn" in text and "most requests/s at concurrency 16" in text
    row = next(line for line in text.splitlines() if "requests/s at concurrency 16 over 1" in line and line.startswith("| ["))
    assert "2.8x" in row and "**not met**" in row


def test_sweep_search_has_its_section() -> None:
    res = json.loads((REPO_ROOT / "benchmarks" / "results" / "sweep_search.json").read_text())
    text = render.render_sweep_search([res], {})
    assert f"`{res['command']}`" in text and "| bayes+hyperband |" in text and "| random |" in text
    assert sum(line.startswith("| bayes+hyperband | trial-") for line in text.splitlines()) == len(res["arms"]["bayes+hyperband"]["trials"])
    (row,) = render.rows_sweep_search([res], {})
    assert row.target.startswith("none set") and f"{res['summary']['best_delta_points']:+.2f} points" in row.measured
    assert any(s.key == "sweep_search" for _, sections in render.GROUPS for s in sections)
