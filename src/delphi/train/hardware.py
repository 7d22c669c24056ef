"""What the trainer decides from the hardware, in one place: the CPU it runs on (vendor, model,
vector ISA, native bf16), the autocast precision, and the peak FLOP/s that MFU is measured against.

Every decision here must be sensible on any x86 CPU, not only the one a figure was taken on: Intel
with AVX-512/AMX (native bf16 matmuls) and AMD or older Intel with AVX2 only (bf16 emulated, slower
than fp32). `describe_hardware` says what was detected; `delphi run` prints it once and every
`summary.json` records it under "hardware".
"""

from __future__ import annotations

import os
import platform
import time
from functools import lru_cache
from pathlib import Path

import torch


@lru_cache(maxsize=1)
def _cpu_flags_and_model() -> tuple[frozenset | None, str]:
    """(/proc/cpuinfo flags or None off Linux, CPU model name)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, platform.processor() or platform.machine()
    flags: frozenset | None = None
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "flags" and flags is None:
            flags = frozenset(value.split())
        elif key == "model name" and not model:
            model = value.strip()
    return flags, model or platform.machine()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AMX-BF16 or AVX512-BF16), where oneDNN runs bf16
    autocast faster than fp32. `get_cpu_capability()` only says "AVX512", so read the CPU flags
    (Linux); elsewhere ask oneDNN whether it has a bf16 path."""
    flags, _ = _cpu_flags_and_model()
    if flags is not None:
        return bool({"amx_bf16", "avx512_bf16"} & flags)
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str) -> torch.dtype | None:
    """Autocast dtype for the run (None: plain fp32). Master weights and the loss stay fp32.

    "auto": bf16 on CUDA GPUs that support it, and on CPUs with native bf16 (AMX / AVX512-BF16):
    there bf16 autocast trained ~1.2–1.4x faster and moved the final macro loss of a 3-seed CPU
    ladder run by less than the seed-to-seed spread (benchmarks/RESULTS.md, "bf16 vs fp32").
    `DELPHI_CPU_BF16=0` keeps CPU runs in fp32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if os.environ.get("DELPHI_CPU_BF16", "1") != "0" and cpu_has_fast_bf16():
        return torch.bfloat16
    return None


# glibc's malloc serves blocks above its mmap threshold (128 KB, raised on the fly only up to the
# size of the last freed mmapped block) with fresh mmap()s and gives freed heap tops back to the
# kernel, so a training step that allocates and frees the same few-MB activations, logit chunks
# and gradients every step pays a page fault for every 4 KB of them, every step: ~2,000 faults a
# grid-shape step and 1.2-1.3x its time in a fresh process, 1.2x the time of `tiny`'s held-out run
# (benchmarks/RESULTS.md, "Allocator"; the grid's long-lived workers gained little). Serving
# blocks up to 32 MB (glibc's ceiling for this setting on 64-bit) from the heap and keeping up to
# 1 GB of freed heap makes the memory of one step the memory of the next, as jemalloc or tcmalloc
# would, without preloading a library. The numbers only move where and when memory is reused,
# never a result.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
_MMAP_THRESHOLD_BYTES = 32 << 20
_TRIM_THRESHOLD_BYTES = 1 << 30
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


@lru_cache(maxsize=1)
def keep_freed_memory() -> str:
    """Make this process's glibc allocator reuse freed memory instead of returning it to the kernel
    (see above); once per process. Returns what the allocator is, for `summary.json`.

    Left alone: another allocator preloaded (`LD_PRELOAD`), any glibc malloc setting in the
    environment (the user's choice wins), `DELPHI_MALLOC=default`, and non-glibc platforms."""
    preload = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in preload:
            return f"{name} (preloaded)"
    if os.environ.get("DELPHI_MALLOC", "") == "default":
        return "glibc default (DELPHI_MALLOC=default)"
    if any(k in os.environ for k in _ALLOCATOR_ENV):
        return "glibc, settings from the environment"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "system default"
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1)
    except (OSError, AttributeError):
        return "glibc default (mallopt unavailable)"
    return "glibc, freed memory kept (mmap threshold 32 MB, trim threshold 1 GB)" if ok else "glibc default"


def describe_hardware(device: str = "cpu") -> dict:
    """What the run's decisions were based on: device, CPU model, the vector ISA ATen dispatches to
    (`ATEN_CPU_CAPABILITY` can lower it) and whether bf16 matmuls are native.
    """
    flags, model = _cpu_flags_and_model()
    info = {"device": device, "cpu": model, "isa": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": cpu_has_fast_bf16(),
            "auto_precision": "bf16" if resolve_precision("auto", device) == torch.bfloat16 else "fp32"}
    if flags is not None:
        info["cpu_flags"] = sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def hardware_line(info: dict) -> str:
    """One line for people, e.g. `cpu: AMD EPYC (AVX2; bf16 not native): precision "auto" trains in fp32`."""
    if "gpu" in info:
        return f"device: {info['gpu']} ({info['device']})"
    bf16 = "native bf16" if info.get("bf16_native") else "bf16 not native"
    return f"cpu: {info['cpu']} ({info['isa']}; {bf16}): precision \"auto\" trains in {info['auto_precision']}"


def peak_flops_per_s(device: str, dtype: torch.dtype | None) -> float | None:
    """Peak FLOP/s of one device for MFU: `DELPHI_PEAK_FLOPS`, a table of datacenter GPUs, or, on
    CPU, the best matmul throughput measured in a ~0.2 s probe, once per process, dtype and thread
    count (an achievable, not a datasheet, peak — MFU on CPU is relative to it)."""
    env = os.environ.get("DELPHI_PEAK_FLOPS")
    if env:
        return float(env)
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device).upper()
        bf16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
        for key, val in bf16.items():
            if key in name:
                return val if dtype == torch.bfloat16 else val / 2  # tf32 dense is half the bf16 peak
        return None
    return _cpu_matmul_peak(dtype or torch.float32, torch.get_num_threads())


@lru_cache(maxsize=None)
def _cpu_matmul_peak(dtype: torch.dtype, threads: int) -> float | None:
    """The CPU probe, once per process, dtype and thread count: a long-lived sweep worker trains
    dozens of runs of a few seconds each, and 0.2 s of probe per run was ~3% of the `tiny` grid.
    Its own generator leaves torch's global RNG as it found it."""
    n = 1024
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, dtype=dtype, generator=gen)
    b = torch.randn(n, n, dtype=dtype, generator=gen)
    best = 0.0
    deadline = time.perf_counter() + 0.2
    a @ b
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / max(time.perf_counter() - t0, 1e-9))
    return best or None


