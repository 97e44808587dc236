"""The machine and the software a run used, probed without importing either framework (the parent stays light):
versions, the CPU's model and the vector and matrix extensions that decide its kernels, the settings in effect."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

# Variables that change how either framework computes or how fast (threads, oneDNN, XLA, devices, caches).
ENVIRONMENT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME", "TF_ENABLE_ONEDNN_OPTS",
                         "TF_XLA_FLAGS", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES",
                         "TORCHINDUCTOR_CACHE_DIR", "ONEDNN_VERBOSE", "DNNL_MAX_CPU_ISA")
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8",
                "avx_vnni")


def cpu_info() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo ({} where there is none, as on macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the end of the first processor's entry
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_model(info: dict[str, str]) -> str:
    return info.get("model name") or platform.processor() or platform.machine()


def cpu_flags(info: dict[str, str]) -> str:
    """The vector and matrix extensions that decide the CPU kernels (AVX2, AVX-512, AMX, bf16)."""
    if "flags" not in info:
        return "unknown"
    flags = info["flags"].split()
    wanted = [flag for flag in flags if flag in KERNEL_FLAGS]
    return " ".join(wanted) + ("" if any(flag.startswith("amx") for flag in flags) else " (no AMX)")


def package_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(threads: int, in_process: bool) -> dict:
    """Versions, CPU, threads and how the sides ran, for results.json."""
    return {"python": platform.python_version(), "tensorflow": package_version("tensorflow"),
            "keras": package_version("keras"), "torch": package_version("torch"), "jax": package_version("jax"),
            "numpy": package_version("numpy"),
            "cpu": cpu_model(cpu_info()), "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "process": "one shared process" if in_process else "its own subprocess"}


def benchmark_environment(threads: int) -> dict:
    """environment() plus what decides a timing: the CPU's kernel extensions and the variables in effect."""
    return {**environment(threads, False), "cpu_flags": cpu_flags(cpu_info()),
            "variables": {name: os.environ[name] for name in ENVIRONMENT_VARIABLES if name in os.environ}}
