"""tools/gpu_check.py cannot rot: its toy-sized run goes through every check on the CPU."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CUDA_ONLY = {"float64_step", "blocks_fp32", "ddp"}


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_tiny_run_writes_a_row_for_every_check(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--device", "cpu", "--tiny", "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {row["id"]: row for row in report["checks"]}
    assert list(rows) == [check_id for check_id, _, _ in load_gpu_check().CHECKS]
    for check_id, row in rows.items():
        expected = {"skipped: no CUDA"} if check_id in CUDA_ONLY else {"pass", "measured"}
        assert row["status"] in expected, (check_id, row)
    table = (tmp_path / "gpu_check.md").read_text()
    for row in rows.values():
        assert f"| {row['title']} | {row['status']} |" in table

    # The CUDA checks rehearsed their comparisons on the CPU.
    assert rows["float64_step"]["figures"]["weights_max_abs"] == 0.0
    assert rows["blocks_fp32"]["figures"]["NL"]["device_vs_cpu"] == 0.0
    amp = rows["amp"]["figures"]
    assert amp["fp32"]["logits"]["max_abs"] < 1e-4 < amp["bf16"]["logits"]["max_abs"]
    assert amp["fp16, fp32 attention"]["logits"]["finite"]
    kernels = rows["attention_kernels"]["figures"]
    assert kernels["RNL layer2_0 amp"]["8"]["kernel"] == "flash (CPU)"
    assert kernels["NL layer3_0 fp32"]["4"]["backends"]["math"] == "ok"
    training = rows["train_throughput"]["figures"]
    assert {"bf16, 4f", "bf16, release form, 4f", "bf16, checkpointing all, 4f"} <= set(training)
    assert training["bf16, 4f"]["clips_per_s"] > 0
    assert rows["device_transform"]["figures"]["max_grey_levels"] <= 2.0
    assert "step_clips_per_s" in rows["loader_vs_step"]["figures"]


def test_a_failing_or_slow_check_is_that_rows_failure(tmp_path: Path, monkeypatch):
    gpu_check = load_gpu_check()

    def broken(ctx, row):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def slow(ctx, row):
        row.figures["before"] = 1
        try:
            time.sleep(10)
        except gpu_check.CheckTimeout as timeout:  # torch.compile wraps what it catches
            raise RuntimeError("InductorError") from timeout

    checks = {check_id: (check_id, title, fn) for check_id, title, fn in gpu_check.CHECKS}
    checks["eval_throughput"] = ("eval_throughput", "Evaluation", broken)
    checks["amp"] = ("amp", "Mixed precision", slow)
    monkeypatch.setattr(gpu_check, "CHECKS", list(checks.values()))
    tiny = dataclasses.replace(gpu_check.PROFILES["tiny"], default_budget_s=1.0)
    monkeypatch.setitem(gpu_check.PROFILES, "tiny", tiny)
    only = ["environment", "amp", "eval_throughput"]
    status = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path), "--only", *only])
    assert status == 1
    rows = {r["id"]: r for r in json.loads((tmp_path / "gpu_check.json").read_text())["checks"]}
    assert rows["environment"]["status"] == "pass"
    assert rows["amp"]["status"] == "timeout" and rows["amp"]["figures"] == {"before": 1}
    assert rows["eval_throughput"]["status"] == "error"
    assert "illegal memory access" in rows["eval_throughput"]["headline"]
    assert rows["ddp"]["status"] == "not selected"
    assert "illegal memory access" in (tmp_path / "gpu_check.md").read_text()


def test_cuda_requested_without_cuda_still_writes_both_files(tmp_path: Path):
    gpu_check = load_gpu_check()
    if gpu_check.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status = gpu_check.main(["--device", "cuda", "--tiny", "--out", str(tmp_path)])
    assert status == 1
    rows = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert rows[0]["status"] == "fail" and "is_available() is False" in rows[0]["headline"]
    assert all(r["status"] == "skipped: no CUDA" for r in rows[1:])
