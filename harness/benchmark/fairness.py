"""The fairness manifest: per side, the settings that change a timing without changing the code (TF32, cuDNN
autotuning, oneDNN, XLA, torch.compile, threads), the environment variables behind them, and what the harness set;
each side's runtime reports its own (fairness_settings in tf_impl/benchmark.py and torch_impl/benchmark.py)."""
from __future__ import annotations

from harness.report import SIDE_NAMES  # every arm's title (harness/surface.py ARMS)

# Settings that depend on the row's mode rather than on the process: kept per mode.
MODE_SETTINGS = ("compile", "memory_format", "jit_compile", "graph")


def manifest(results: list[dict], threads: int, tf32: bool, device: str) -> dict:
    """From every row's result: each side's process-wide settings (from its parity row), the variables checked
    (None: unset), what the harness set, the mode-dependent settings per mode, the TF32 state of each precision's
    rows, and whether both sides ran each precision under the same TF32 policy."""
    found: dict = {}
    for result in results:
        row, fairness = result["row"], result.get("fairness")
        if fairness is None:
            continue
        settings = dict(fairness["settings"])
        entry = found.setdefault(row["side"], {"settings": {}, "variables": {}, "modes": {}, "tf32_by_precision": {},
                                               "harness_set": {"intra_op_threads": threads, "inter_op_threads": 1}})
        entry["variables"] = settings.pop("variables")
        modes = {key: settings.pop(key) for key in MODE_SETTINGS if key in settings}
        if row["kind"] == "parity":
            entry["settings"] = settings
        elif row["kind"] == "step":
            entry["modes"].setdefault(row["mode"], modes)
            entry["tf32_by_precision"].setdefault(row["precision"], bool(settings.get("tf32_matmul")))
        entry["harness_set"].update(fairness["harness_set"])
    policies = {tuple(sorted(entry["tf32_by_precision"].items())) for entry in found.values()}
    return {"sides": found, "tf32_requested": tf32, "device": device, "same_tf32_policy": len(policies) <= 1,
            "tf32_policy": ("TF32 on in the timed rows of both sides (--tf32); the parity check stays in fp32"
                            if tf32 else "TF32 off in the fp32 rows of both sides, on only in tf32 rows"
                            + (" (no effect on a CPU)" if device == "cpu" else ""))}


def lines(fairness: dict) -> list[str]:
    """The manifest as report.md bullets."""
    out = [f"- TF32: {fairness['tf32_policy']}; both sides the same per precision: "
           f"{'yes' if fairness['same_tf32_policy'] else 'NO'}."]
    for side, entry in fairness["sides"].items():
        settings = ", ".join(f"{key} {value}" for key, value in entry["settings"].items())
        out.append(f"- {SIDE_NAMES[side]}: {settings}.")
        for mode, values in entry["modes"].items():
            out.append(f"  - mode {mode}: " + ", ".join(f"{key} {value}" for key, value in values.items()))
        out.append("  - set by the harness: " + ", ".join(f"{k} {v}" for k, v in entry["harness_set"].items()))
        set_here = {k: v for k, v in entry["variables"].items() if v is not None}
        out.append(f"  - environment variables that change these ({', '.join(entry['variables'])}): "
                   + (", ".join(f"{k}={v}" for k, v in set_here.items()) or "none set"))
    return out
