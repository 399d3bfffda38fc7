"""tools/gpu_check.sh --cpu: the GPU check's CPU subset runs, so the script cannot rot between GPU loans; and its
judgement of reduced-precision outputs tells rounding from breakage."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from depth2img.base.compat import torch_version

ROOT = Path(__file__).resolve().parent.parent


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(output: str) -> dict[str, tuple[str, str]]:
    """check -> (result, details) from the markdown table at the end of the output."""
    lines = output[output.index("| check | result | details |") :].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("| "):
            break
        check, result, detail = (cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:4])
        rows[check] = (result, detail)
    return rows


@pytest.mark.skipif(
    torch_version() < (2, 4),
    reason="the GPU machine runs current releases (environment a); the WebUI pins' environment b is not its target",
)
def test_cpu_subset_runs_and_reports_every_part():
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(ROOT / "tools" / "gpu_check.sh"), "--cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    rows = table_rows(proc.stdout)
    passed = [
        "engine float32 reference, cpu",
        "engine bfloat16, cpu: img2img, estimated depth",
        "engine bfloat16, cpu: img2img, 16-bit depth map",
        "engine bfloat16, cpu: inpaint",
        "engine bfloat16, cpu: txt2img from a depth map",
        "CheckpointMidasEstimator: weights cpu float16, images cpu float16",
        "CheckpointMidasEstimator.from_module: weights cpu float16, images cpu float16",
    ]
    for check in passed:
        assert rows[check][0] == "ok", (check, rows.get(check))
    # What needs CUDA says so, and the CUDA-test selector still finds at least one test to skip.
    assert rows["tests marked for CUDA"][0] == "skipped: no CUDA (--cpu)"
    assert re.match(r"[1-9]\d* skipped by their markers", rows["tests marked for CUDA"][1])
    assert rows["engine float16, cpu"][0].startswith("skipped: ")
    assert rows["estimators with mixed placement (weights and images on different devices)"][0].startswith("skipped: ")
    assert rows["benchmarks at 512x512 on a full-size checkpoint"][0] == "skipped: no CUDA (--cpu)"
    assert not [check for check, (result, _) in rows.items() if result == "FAIL"]


def test_precision_judgement_passes_rounding_and_fails_breakage():
    gpu_check = load_gpu_check()
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 1, (1, 64, 64, 3)).astype(np.float32)
    eps = torch.finfo(torch.bfloat16).eps
    rounding = reference + rng.normal(0, eps, reference.shape).astype(np.float32)  # rel RMS 1.7 eps, max ~5 eps
    assert gpu_check.judge_precision([rounding], [reference], torch.bfloat16)[0]
    # A whole-image change of a tenth (what losing the depth map does) and a NaN both fail.
    assert not gpu_check.judge_precision([reference * 0.9], [reference], torch.bfloat16)[0]
    broken = rounding.copy()
    broken[0, 0, 0, 0] = np.nan
    ok, detail = gpu_check.judge_precision([broken], [reference], torch.bfloat16)
    assert not ok and "non-finite" in detail
    # float16's eps is 8x smaller: the same rounding noise is too much for it.
    assert not gpu_check.judge_precision([rounding], [reference], torch.float16)[0]


def test_a_failing_check_becomes_one_fail_row_and_the_table_survives_pipes():
    gpu_check = load_gpu_check()
    report = gpu_check.Report()
    with report.guard("broken check"):
        raise RuntimeError("expected input[2, 9, 8, 8] to have 5 channels | details\nsecond line")
    report.add("next check", "ok", "a | b")
    assert report.failed
    rows = table_rows(report.table())
    assert rows["broken check"][0] == "FAIL"
    assert rows["broken check"][1].startswith("RuntimeError: expected input[2, 9, 8, 8] to have 5 channels")
    assert "second line" not in rows["broken check"][1]
    assert rows["next check"] == ("ok", "a \\| b")
