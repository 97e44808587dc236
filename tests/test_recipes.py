"""--recipe (named settings under the explicit flags), --save-best (the best epoch's weights beside the last ones)
and --init-weights (training from another run's canonical weights, refused in one line when they do not fit)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from compare import parse_args
from conftest import side_module
from harness.registry import REGISTRY
from shared.callbacks import BestModelSaverCallback, best_model_entry
from shared.errors import UserError
from shared.recipes import RECIPE_FIELDS, RECIPES, recipe_line
from shared.tasks import UNetSpec, make_spec
from shared.weights import save_weights, unet_layout


def test_seed_recipe_is_the_spec_defaults():
    """--recipe seed changes nothing: the source text's SGD lr 0.01 momentum 0.99, 64 px, width 8, 12 epochs."""
    defaults = UNetSpec()
    assert {field: getattr(defaults, field) for field in RECIPE_FIELDS} == RECIPES["seed"]
    assert (defaults.optimizer, defaults.lr, defaults.momentum, defaults.image_size, defaults.base_filters,
            defaults.epochs) == ("sgd", 0.01, 0.99, 64, 8, 12)
    _, spec, _ = parse_args(["--task", "unet", "--recipe", "seed"])
    assert dataclasses.replace(spec) == UNetSpec(recipe="seed")


def test_quality_recipe_sets_its_values_and_flags_win():
    _, spec, _ = parse_args(["--task", "unet", "--recipe", "quality"])
    assert {field: getattr(spec, field) for field in RECIPE_FIELDS} == {**RECIPES["quality"], "image_size": 128}
    assert (spec.recipe, spec.optimizer, spec.image_size, spec.base_filters) == ("quality", "adam", 128, 8)
    _, spec, _ = parse_args(["--task", "unet", "--recipe", "quality", "--epochs", "3", "--lr", "0.01"])
    assert (spec.epochs, spec.lr, spec.schedule, spec.base_filters) == (3, 0.01, RECIPES["quality"]["schedule"], 8)
    line = recipe_line(spec.to_dict())
    assert line.startswith("recipe quality") and "epochs 3 (flag; recipe 20)" in line and "base_filters 8," in line


def test_recipe_applies_to_the_unet_only():
    with pytest.raises(UserError, match="--recipe does not apply to task 'mlp'"):
        parse_args(["--task", "mlp", "--recipe", "quality"])


class FakeSaver:
    """Stands in for a side's ModelSaverCallback: counts its saves."""

    def __init__(self, stem):
        self.stem, self.saves = stem, 0

    def save(self) -> dict:
        self.saves += 1
        return {"model": f"{self.stem}.pt", "checkpoint": f"{self.stem}.safetensors"}


@pytest.mark.parametrize("monitor, values, best_epoch, saves", [
    ("val_dice", [0.5, 0.7, 0.6, 0.7], 2, 2),  # a tie does not replace the earlier epoch
    ("val_loss", [0.9, 0.8, 0.85, 0.7], 4, 3),
])
def test_best_model_saver_keeps_the_best_epoch(tmp_path, monitor, values, best_epoch, saves):
    saver = FakeSaver(tmp_path / "best")
    callback = BestModelSaverCallback(saver, monitor)
    for epoch, value in enumerate(values[:2], start=1):
        callback.on_epoch_end(epoch, {monitor: value})
    # A resumed run makes a new callback: it reads the best so far from best.json.
    callback = BestModelSaverCallback(saver, monitor)
    for epoch, value in enumerate(values[2:], start=3):
        callback.on_epoch_end(epoch, {monitor: value})
    assert saver.saves == saves
    entry = best_model_entry(tmp_path / "best")
    assert entry["best"] == {"epoch": best_epoch, "monitor": monitor, "value": values[best_epoch - 1]}
    assert entry["best_artifacts"] == {"best_model": f"{tmp_path / 'best'}.pt",
                                       "best_checkpoint": f"{tmp_path / 'best'}.safetensors"}
    assert best_model_entry(tmp_path / "nothing") == {}


SMALL = {"image_size": 16, "base_filters": 2}  # depth 4, as the command line builds it


def test_init_weights_start_both_sides_from_the_file(tmp_path):
    source = make_spec("unet", **SMALL)
    trained = {name: np.full(param.shape, 0.25, np.float32) for name, param in unet_layout(source).items()}
    path = save_weights(trained, tmp_path / "model.safetensors")
    _, spec, _ = parse_args(["--task", "unet", "--init-weights", str(path), "--image-size", "16", "--base-filters",
                             "2"])
    initial = REGISTRY["unet"].initial_weights(spec)
    assert initial.keys() == trained.keys() and all(np.array_equal(initial[k], trained[k]) for k in trained)
    for side in ("torch", "tf"):
        model = side_module(side, "unet").build(spec)
        side_module(side, "weights").load_weights(model, initial)
        exported = side_module(side, "weights").export_weights(model)
        assert all(np.array_equal(exported[k], trained[k]) for k in trained), side


def test_init_weights_of_another_width_or_a_missing_file_is_one_line(tmp_path):
    narrow = save_weights({name: np.zeros(param.shape, np.float32) for name, param in
                           unet_layout(make_spec("unet", **SMALL)).items()}, tmp_path / "w2.safetensors")
    with pytest.raises(UserError) as refused:
        parse_args(["--task", "unet", "--init-weights", str(narrow), "--base-filters", "4"])
    message = str(refused.value)
    assert "\n" not in message and str(narrow) in message
    assert "enc1.conv1.weight is (2, 3, 3, 3) but the model needs (4, 3, 3, 3)" in message
    with pytest.raises(UserError, match=r"nope\.safetensors: no such weights file"):
        parse_args(["--task", "unet", "--init-weights", str(tmp_path / "nope.safetensors")])
    shallow = save_weights({name: np.zeros(param.shape, np.float32) for name, param in
                            unet_layout(make_spec("unet", **SMALL, depth=2)).items()}, tmp_path / "d2.safetensors")
    with pytest.raises(UserError, match=r"d2\.safetensors: weights of another architecture: no tensor "
                                        r"enc4\.conv1\.weight, which the model needs"):
        parse_args(["--task", "unet", "--init-weights", str(shallow), "--base-filters", "2"])


def test_readme_shows_the_recipe_table():
    from conftest import ROOT
    from shared.recipes import recipe_table

    assert recipe_table() in (ROOT / "README.md").read_text()
