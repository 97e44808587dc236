"""Named sets of U-Net settings (--recipe): `seed`, the source text's, and `quality`, tuned to reach validation Dice
0.975 on real Carvana photos at 128 px within 5 minutes a side on 2 cores. A recipe only fills in defaults: every
explicit flag wins over it (compare.py)."""
from __future__ import annotations

from shared import tables

# The fields a recipe sets; each recipe gives every one, so the header shows the whole set.
RECIPE_FIELDS = ("optimizer", "lr", "momentum", "schedule", "warmup_epochs", "base_filters", "image_size", "epochs",
                 "augment")

RECIPES: dict[str, dict] = {
    # The source text's settings, the spec's defaults (a test holds them equal): SGD lr 0.01 momentum 0.99, 64 px,
    # width 8, 12 epochs, constant lr.
    "seed": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.99, "schedule": "constant", "warmup_epochs": 0,
             "base_filters": 8, "image_size": 64, "epochs": 12, "augment": True},
    # Adam at 1e-3 with width 16 at 128 px reached 0.976 on real photos in 20 epochs at a constant rate; a warm-up
    # epoch (Adam's first moments are noisy) and a cosine decay to 0 let the last epochs settle. Width 8, because
    # TensorFlow at width 16 needs about 0.9 s a step on a 2-core AVX2 machine (twice the 5 minutes); at width 8 it
    # trained the embedded set's 520 steps in 289 s (docs/unet-training.md).
    "quality": {"optimizer": "adam", "lr": 1e-3, "momentum": 0.99, "schedule": "cosine", "warmup_epochs": 1,
                "base_filters": 8, "image_size": 128, "epochs": 20, "augment": True},
}

DESCRIPTIONS = {"seed": "the source text's settings",
                "quality": "tuned for validation Dice >= 0.975 on real Carvana photos at 128 px"}


def recipe_values(name: str) -> dict:
    return dict(RECIPES[name])


def recipe_line(config: dict) -> str:
    """One line for the run's header and report: the recipe's name and the values this run uses (a spec's
    to_dict(), or results.json's config), with the fields that explicit flags changed marked."""
    recipe = RECIPES[config["recipe"]]
    shown = []
    for field in RECIPE_FIELDS:
        value, default = text(config[field]), text(recipe[field])
        shown.append(f"{field} {value}" + ("" if value == default else f" (flag; recipe {default})"))
    return f"recipe {config['recipe']} ({DESCRIPTIONS[config['recipe']]}): " + ", ".join(shown)


def text(value) -> str:
    """A setting as the header shows it: 128 and (128, 128) both as 128, (128, 192) as 128x192."""
    if isinstance(value, (tuple, list)):
        return str(value[0]) if len(set(value)) == 1 else "x".join(map(str, value))
    return str(value)


def recipe_table() -> str:
    """The recipes as a markdown table (README and --help)."""
    return tables.markdown(["recipe", *RECIPE_FIELDS],
                           [[name, *(values[field] for field in RECIPE_FIELDS)] for name, values in RECIPES.items()])
