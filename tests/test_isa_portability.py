"""The numerically sensitive tests once more on AVX2 kernels, so a test that only passes with the
AVX-512/AMX kernels of one CPU fails here instead of on a user's AMD (or older Intel) machine.

ATen's vectorised kernels are capped with `ATEN_CPU_CAPABILITY=avx2`, oneDNN with
`ONEDNN_MAX_CPU_ISA=AVX2` and MKL with `MKL_ENABLE_INSTRUCTIONS=AVX2`: the kernels an AVX2-only CPU
(e.g. AMD EPYC Zen 1–3) runs. On a machine whose ATen already dispatches to AVX2 (or lower), the
main test run *is* that run, and this one would repeat it bit for bit, so it is skipped there.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

# Tests whose pass/fail depends on float rounding of the CPU's kernels: multi-process training vs
# one process, kill-and-resume equality, logits vs transformers, fused vs plain loss, bf16 choice.
SENSITIVE = ["tests/test_train_distributed.py", "tests/test_train_resume.py", "tests/test_hf_interop.py",
             "tests/test_loss.py", "tests/test_train.py::test_precision_and_compile_resolution",
             "tests/test_train.py::test_hardware_decisions_follow_the_cpu_flags"]


def _capability(env: dict) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2",
                    reason="this test run already uses AVX2 kernels")
def test_sensitive_tests_pass_on_avx2_kernels():
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "DEFAULT", "NO AVX"):
        pytest.skip(f"ATen already dispatches to {torch.backends.cpu.get_cpu_capability()} here: the main run covers it")
    env = {**os.environ, **AVX2_ENV}
    assert _capability(env) == "AVX2"  # the cap took effect
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SENSITIVE],
                          cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
