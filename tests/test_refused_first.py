"""What a hostile command line gets: every malformed list, seed or device is one line and exit status 2 before any
folder or worker exists, and a folder given for a weights file says it is a folder."""
from __future__ import annotations

import pytest

import compare
from harness import environment, flags, seeds
from shared.errors import UserError
from shared.weights import load_weights_file


@pytest.fixture
def called(monkeypatch, tmp_path) -> list:
    """Every mode's entry replaced by a recorder, run from an empty folder of its own."""
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(compare.comparison, "compare", lambda spec, sides, args: calls.append("train"))
    monkeypatch.setattr(compare.seeds, "run_seeds", lambda spec, sides, args, s: calls.append("seeds"))
    monkeypatch.setattr(compare.benchmark_run, "run_benchmark", lambda spec, sides, args: calls.append("benchmark"))
    monkeypatch.setattr(flags, "gpu_device_files", lambda: [])  # this machine has no GPU, whatever it has
    return calls


@pytest.mark.parametrize("flags_given, said", [
    (["--task", "mlp", "--frameworks", "all,torch"], "--frameworks 'all,torch': all names every choice"),
    (["--task", "mlp", "--frameworks", "tf,tf"], "--frameworks 'tf,tf': tf named more than once"),
    (["--task", "mlp", "--frameworks", "tf,"], "--frameworks 'tf,': an empty name between commas"),
    (["--task", "mlp", "--frameworks", "tf,,torch"], "an empty name between commas"),
    (["--task", "cnn", "--seeds", "99999999999999999999"], "--seeds '99999999999999999999': at most 1,000 seeds"),
    (["--task", "cnn", "--seeds", "1000000"], "at most 1,000 seeds"),
    (["--task", "cnn", "--seeds", "0,4294967296"], "a seed must lie in [0, 4,294,967,295], got 4,294,967,296"),
    (["--task", "cnn", "--seeds", "0,99999999999999999999"], "a seed must lie in [0, 4,294,967,295]"),
    (["--task", "cnn", "--seeds", "3,3"], "expected distinct non-negative seeds"),
    (["--task", "mlp", "--device", "cuda"], "--device cuda: this machine has no GPU"),
    (["--task", "mlp", "--benchmark", "--batch-sizes", "8,8"], "--batch-sizes '8,8': 8 named more than once"),
    (["--task", "mlp", "--benchmark", "--modes", "eager,eager"], "eager named more than once"),
    (["--task", "mlp", "--benchmark", "--modes", "all,eager"], "all names every choice"),
    (["--task", "mlp", "--benchmark", "--precisions", "fp32,fp32"], "fp32 named more than once"),
])
def test_a_bad_list_seed_or_device_is_one_line_before_anything_exists(flags_given, said, called, tmp_path, capsys):
    assert compare.main([*flags_given, "--out", "run"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("compare.py: error: ") and said in error and error.count("\n") == 1, error
    assert called == [] and list(tmp_path.iterdir()) == []


def test_cuda_hidden_by_cuda_visible_devices_is_refused_and_a_gpu_lets_it_through(called, monkeypatch, capsys):
    monkeypatch.setattr(flags, "gpu_device_files", lambda: ["/dev/nvidia0"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert compare.main(["--task", "mlp", "--device", "cuda"]) == 2
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in capsys.readouterr().err
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert compare.main(["--task", "mlp", "--device", "cuda"]) == 0 and called == ["train"]
    monkeypatch.setattr(flags, "gpu_device_files", lambda: [])
    assert compare.main(["--task", "mlp", "--device", "auto"]) == 0  # auto falls back to the CPU in the sides


def test_the_gpu_probe_reads_device_files(tmp_path):
    assert environment.gpu_device_files(tmp_path) == []
    (tmp_path / "nvidiactl").touch()  # the driver's control file, present without a GPU
    assert environment.gpu_device_files(tmp_path) == []
    for name in ("nvidia0", "kfd"):
        (tmp_path / name).touch()
    assert environment.gpu_device_files(tmp_path) == [str(tmp_path / "kfd"), str(tmp_path / "nvidia0")]


def test_a_comma_list_keeps_its_order_and_refuses_repeats_after_conversion():
    assert flags.comma_list("8, 16,4", "--batch-sizes", convert=int) == [8, 16, 4]
    with pytest.raises(UserError, match="8 named more than once"):
        flags.comma_list("8,08", "--batch-sizes", convert=int)
    assert flags.frameworks("all", ("tf", "torch")) == ["tf", "torch"]
    assert flags.frameworks(" torch , tf ", ("tf", "torch")) == ["torch", "tf"]
    assert seeds.parse_seeds("1000") == list(range(1000)) and seeds.parse_seeds("4294967295,") == [2**32 - 1]


def test_a_folder_for_weights_says_it_is_a_folder(called, tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    assert compare.main(["--task", "unet", "--init-weights", "weights", "--out", "run"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "weights: a folder, not a weights file" in error, error
    assert called == [] and [path.name for path in tmp_path.iterdir()] == ["weights"]
    (tmp_path / "weights" / "tf").mkdir()
    (tmp_path / "weights" / "tf" / "model.safetensors").touch()
    with pytest.raises(UserError, match=r"a folder, not a weights file: .*\(such as .*tf/model.safetensors\)"):
        load_weights_file(tmp_path / "weights")  # --predict --weights reads it through the same function
