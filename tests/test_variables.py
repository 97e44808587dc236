"""The environment variables that change a run's numbers (TF_ENABLE_ONEDNN_OPTS moves TensorFlow's losses in the
8th digit) are recorded by every run, per side, with whose they are: the user's, twinnets' or a library's."""
from __future__ import annotations

import json

import pytest

import compare
from harness import environment, report, seeds
from shared import quiet


def test_the_variables_in_effect_are_the_listed_ones_and_the_frameworks_prefixes(monkeypatch):
    for name, value in {"TF_ENABLE_ONEDNN_OPTS": "0", "OPENBLAS_NUM_THREADS": "3", "TORCH_SOMETHING": "1",
                        "XLA_FLAGS": "--xla_x", "CUDA_VISIBLE_DEVICES": "1", "KERAS_BACKEND": "jax",
                        "MY_TF_SETTING": "no", "PATH_LIKE": "no"}.items():
        monkeypatch.setenv(name, value)
    found = environment.variables_in_effect()
    assert {"TF_ENABLE_ONEDNN_OPTS": "0", "OPENBLAS_NUM_THREADS": "3", "TORCH_SOMETHING": "1", "XLA_FLAGS": "--xla_x",
            "CUDA_VISIBLE_DEVICES": "1", "KERAS_BACKEND": "jax"}.items() <= found.items()
    assert "MY_TF_SETTING" not in found and "PATH_LIKE" not in found and list(found) == sorted(found)


def test_tensorflow_defaults_remember_only_what_they_set(monkeypatch):
    monkeypatch.setattr(quiet, "SET_HERE", {})
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")  # the user's
    quiet.tensorflow_defaults()
    assert quiet.SET_HERE == {"TF_CPP_MIN_LOG_LEVEL": "3"}


def test_each_sides_variables_say_whose_they_are(monkeypatch):
    """The user set OMP_NUM_THREADS; scikit-learn set KMP_DUPLICATE_LIB_OK in the parent, which the sides inherited;
    twinnets set TensorFlow's defaults and KERAS_BACKEND in the tf side; PyTorch set TORCHINDUCTOR_CACHE_DIR there."""
    here = {"OMP_NUM_THREADS": "2", "KMP_DUPLICATE_LIB_OK": "True"}
    monkeypatch.setattr(environment, "AT_START", {"OMP_NUM_THREADS": "2"})
    monkeypatch.setattr(environment, "variables_in_effect", lambda: here)
    monkeypatch.setattr(quiet, "SET_HERE", {})
    tf = {**here, "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    torch = {**here, "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor"}
    found = environment.recorded_variables({
        "tf": {"variables": tf, "variables_set_by_libraries": []},
        "torch": {"variables": torch, "variables_set_by_libraries": ["TORCHINDUCTOR_CACHE_DIR"]},
        "keras-jax": {}})  # a result from before the variables were recorded: the user's
    assert found["variables"] == {"tf": tf, "torch": torch, "keras-jax": {"OMP_NUM_THREADS": "2"}}
    assert found["variables_set_by_twinnets"] == {
        "tf": ["KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS"], "torch": [], "keras-jax": []}
    assert found["variables_set_by_libraries"] == {
        "tf": ["KMP_DUPLICATE_LIB_OK"], "torch": ["KMP_DUPLICATE_LIB_OK", "TORCHINDUCTOR_CACHE_DIR"], "keras-jax": []}
    line = report.variables_line(found)
    assert line.startswith("Environment variables (* set by twinnets, + by a library as it loaded, unmarked: yours): ")
    assert "TensorFlow: `KERAS_BACKEND=tensorflow`*, `KMP_DUPLICATE_LIB_OK=True`+, `OMP_NUM_THREADS=2`, " in line
    assert "Keras on JAX: `OMP_NUM_THREADS=2`." in line


def test_a_series_keeps_every_seeds_variables_when_they_differ():
    same = {"python": "3", "variables": {"tf": {"OMP_NUM_THREADS": "2"}}}
    other = {"python": "3", "variables": {"tf": {"OMP_NUM_THREADS": "4"}}}
    assert seeds.series_environment({0: {"environment": same}, 1: {"environment": same}}) == same
    found = seeds.series_environment({0: {"environment": same}, 3: {"environment": other}})
    assert found["variables"] == same["variables"]
    assert found["variables_by_seed"] == {"0": same["variables"], "3": other["variables"]}


@pytest.mark.parametrize("user_value", [None, "0"])
def test_a_run_records_its_variables_in_results_and_report(user_value, tmp_path, monkeypatch):
    """A one-process neuron run of PyTorch (loaded by conftest already): the recorded TF_ENABLE_ONEDNN_OPTS, which the
    tests' process set as tf_impl does, is twinnets' default unless the user set it."""
    monkeypatch.setattr(quiet, "SET_HERE", {} if user_value else {"TF_ENABLE_ONEDNN_OPTS": "1"})
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", user_value or "1")
    monkeypatch.setattr(environment, "AT_START", environment.variables_in_effect())
    out = tmp_path / "run"
    assert compare.main(["--task", "neuron", "--frameworks", "torch", "--in-process", "--epochs", "3", "--threads", "1",
                         "--out", str(out)]) == 0
    recorded = json.loads((out / "results.json").read_text())["environment"]
    assert recorded["variables"]["torch"]["TF_ENABLE_ONEDNN_OPTS"] == (user_value or "1")
    assert ("TF_ENABLE_ONEDNN_OPTS" in recorded["variables_set_by_twinnets"]["torch"]) is (user_value is None)
    header = (out / "report.md").read_text().split("\n|")[0]  # what comes before the first table
    assert f"`TF_ENABLE_ONEDNN_OPTS={user_value or 1}`{'' if user_value else '*'}" in header
