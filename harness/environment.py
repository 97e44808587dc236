"""The machine and the software a run used, probed without importing either framework (the parent stays light):
versions, the CPU's model and the vector and matrix extensions that decide its kernels, the settings in effect."""
from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

from shared import quiet

# Variables that change how either framework computes or how fast (threads, oneDNN, XLA, devices, caches), and the
# prefixes of the frameworks' and math libraries' own: every variable set under one of them is recorded too.
ENVIRONMENT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME",
                         "TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS", "XLA_FLAGS", "TF_CPP_MIN_LOG_LEVEL",
                         "CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE", "CUBLAS_WORKSPACE_CONFIG", "KERAS_BACKEND",
                         "TORCHINDUCTOR_CACHE_DIR", "ONEDNN_VERBOSE", "DNNL_MAX_CPU_ISA")
VARIABLE_PREFIXES = ("TF_", "TORCH", "PYTORCH_", "XLA_", "JAX_", "KERAS_", "ONEDNN_", "DNNL_", "KMP_", "MKL_", "OMP_",
                     "OPENBLAS_")
# The device files a GPU's runtime opens, one of which any GPU a framework can use has: NVIDIA's (/dev/nvidia0), a
# Jetson's (/dev/nvhost-ctrl-gpu), AMD's ROCm (/dev/kfd: PyTorch's ROCm build calls it cuda) and WSL's (/dev/dxg).
GPU_DEVICE_FILES = ("nvidia[0-9]*", "nvhost-ctrl-gpu", "kfd", "dxg")
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8",
                "avx_vnni")


def cpu_info() -> dict[str, str]:
    """The first processor's entry of /proc/cpuinfo ({} where there is none, as on macOS: cpu_model then falls back
    to platform, and the flags are "unknown"). Not py-cpuinfo: its get_cpu_info() takes 1.3 s (it starts a
    process), on Linux reads this same file, and has no flags for Apple silicon either."""
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
    return {**environment(threads, False), "cpu_flags": cpu_flags(cpu_info()), "variables": variables_in_effect()}


def variables_in_effect() -> dict[str, str]:
    """The variables set in this process that can change a side's numbers or its speed (ENVIRONMENT_VARIABLES and
    every one under VARIABLE_PREFIXES), by name."""
    return {name: value for name, value in sorted(os.environ.items())
            if name in ENVIRONMENT_VARIABLES or name.startswith(VARIABLE_PREFIXES)}


# The variables this process started with: harness/ imports no framework at module level (test_import_boundary.py),
# so none that a library sets as it loads (scikit-learn's KMP_DUPLICATE_LIB_OK, PyTorch's TORCHINDUCTOR_CACHE_DIR) is
# here yet.
AT_START = variables_in_effect()


def set_by_libraries() -> list[str]:
    """The variables this process set since it started that are not twinnets' defaults (shared/quiet.py): a library
    set them as it loaded."""
    return sorted(name for name, value in variables_in_effect().items()
                  if AT_START.get(name) != value and quiet.SET_HERE.get(name) != value)


def side_variables() -> dict:
    """What a side records of its process: the variables in effect as it ran, and those a library set there."""
    return {"variables": variables_in_effect(), "variables_set_by_libraries": set_by_libraries()}


def user_variables() -> dict[str, str]:
    """The variables as the user set them: those this process started with, less twinnets' defaults."""
    return {name: value for name, value in AT_START.items() if quiet.SET_HERE.get(name) != value}


def recorded_variables(by_side: dict[str, dict]) -> dict:
    """results.json's record of the variables, from each side's result (side_variables(); a result written before
    they were recorded counts as the user's): what each side ran with, those a library set as it loaded (in the
    side's process, or in this one, which the side inherited), and the rest that the user did not set: twinnets' (the
    TensorFlow defaults of shared/quiet.py, a Keras arm's KERAS_BACKEND, a data-parallel run's thread count)."""
    user, here, inherited = user_variables(), variables_in_effect(), set_by_libraries()
    found = {side: result.get("variables", user) for side, result in by_side.items()}
    libraries = {side: sorted({*by_side[side].get("variables_set_by_libraries", []),
                               *(name for name in inherited if variables.get(name) == here[name])})
                 for side, variables in found.items()}
    twinnets = {side: sorted(name for name, value in variables.items()
                             if user.get(name) != value and name not in libraries[side])
                for side, variables in found.items()}
    return {"variables": found, "variables_set_by_twinnets": twinnets, "variables_set_by_libraries": libraries}


def gpu_device_files(dev: Path = Path("/dev")) -> list[str]:
    """The GPU device files of this machine (GPU_DEVICE_FILES): none means no framework can see a GPU here. Read in
    microseconds, where asking a framework would import it (seconds) and nvidia-smi covers NVIDIA alone."""
    return sorted(str(path) for pattern in GPU_DEVICE_FILES for path in dev.glob(pattern))
