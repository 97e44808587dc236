# %% [markdown]
# # 4. The U-Net: car masks, trained twice
#
# The main job: a U-Net learns each photo's car mask, as in Kaggle's Carvana Image Masking Challenge. Loss: binary
# cross-entropy plus soft Dice; a pixel is car when the predicted probability exceeds 0.5; the answer is submitted
# as run-length text. The models are `keras_models/unet.py` and `torch_impl/unet.py`, trained by
# `tf_impl/classifier.py` and `torch_impl/classifier.py` (`CarvanaClassifier`).
#
# **Processes.** Training is the project's own command, `compare.py`, which runs each side in a fresh process of its
# own (fair timing, clean memory, and no TensorFlow and PyTorch crashing each other in one process: see
# `torch_impl/__init__.py`). This notebook starts it and reads what it wrote: `results.json`, each side's
# predictions and Kaggle submission. Nothing here imports TensorFlow or PyTorch.
#
# The data is embedded: photos generated in Carvana's exact layout (1918x1280, 16 angles per car), so nothing is
# downloaded. The sizes are tiny so the notebook runs in about half a minute on a laptop: 48 photos (3 cars) at
# 32x32, a U-Net 4 filters wide, 5 epochs of the `quality` recipe (Adam, cosine schedule). The full run:
# `python compare.py --task unet` (docs/unet-training.md).

# %%
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "compare.py").is_file())
sys.path.insert(0, str(ROOT))  # the checkout's modules, wherever Jupyter was started

import matplotlib.pyplot as plt
import numpy as np
from shared.metrics import dice, pixel_agreement
from shared.rle import read_rle_csv, rle_decode, rle_encode

WORK = tempfile.TemporaryDirectory(prefix="twinnets-notebook-")  # removed when the kernel stops
out = Path(WORK.name) / "unet"
flags = ["--task", "unet", "--recipe", "quality", "--image-size", "32", "--base-filters", "4", "--sample-size", "48",
         "--epochs", "5", "--control", "none", "--out", str(out)]
print("python compare.py", " ".join(flags[:-2]))
finished = subprocess.run([sys.executable, str(ROOT / "compare.py"), *flags], capture_output=True, text=True)
print(finished.stdout[finished.stdout.index("== PyTorch =="):])  # the console of the run, from the second side on
finished.check_returncode()
results = json.loads((out / "results.json").read_text())

# %% [markdown]
# ## The two training curves
#
# Before training, both sides ran the same canonical weights on the same photos (parity). Then each trained in its
# own process on the same batches in the same order, with the same augmentation.

# %%
print(f"data: {results['data']['source']}, {results['data']['train']} training and {results['data']['valid']} "
      f"validation photos of {results['data']['cars']} cars, resized to {results['data']['image_size']}")
parity = results["parity"]
print(f"parity: max |tf - torch| = {parity['max_abs_diff']:.3g} (tolerance {parity['tolerance']})")
figure, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for side, style in (("tf", {"lw": 4, "alpha": 0.5, "label": "TensorFlow"}),
                    ("torch", {"ls": "--", "color": "black", "lw": 1, "label": "PyTorch"})):
    history = results["frameworks"][side]["history"]
    epochs = [record["epoch"] for record in history]
    axes[0].plot(epochs, [record["loss"] for record in history], **style)
    axes[1].plot(epochs, [record["val_dice"] for record in history], **style)
axes[0].set(xlabel="epoch", ylabel="training loss (BCE + soft Dice)")
axes[1].set(xlabel="epoch", ylabel="validation Dice")
axes[1].axhline(results["frameworks"]["tf"]["metrics"]["val_dice_all_foreground"], color="0.7", lw=1,
                label="a mask that is all car")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# ## The masks side by side
#
# Each side kept its predictions on a few validation photos (`<side>/preview.npz`): the photo, the true mask, and
# the predicted probability. Thresholded at 0.5, with each photo's Dice, $2|A \cap B| / (|A| + |B|)$:

# %%
previews = {side: np.load(out / side / "preview.npz") for side in ("tf", "torch")}
photos = previews["tf"]["images"]
figure, axes = plt.subplots(len(photos), 4, figsize=(8, 2.1 * len(photos)))
for row, photo in enumerate(photos):
    truth = previews["tf"]["masks"][row]
    panels = [(photo, "photo"), (truth, "true mask")]
    for side, name in (("tf", "TensorFlow"), ("torch", "PyTorch")):
        predicted = previews[side]["predicted"][row] > 0.5
        panels.append((predicted, f"{name}, Dice {dice(predicted, truth):.3f}"))
    for axis, (image, title) in zip(axes[row], panels):
        axis.imshow(np.clip(image, 0, 1), cmap=None if image.ndim == 3 else "gray")
        axis.set_title(title, fontsize=8)
        axis.axis("off")
plt.tight_layout()
plt.show()
agree = pixel_agreement(previews["tf"]["predicted"] > 0.5, previews["torch"]["predicted"] > 0.5)
print(f"the two sides' masks agree on {agree:.2%} of these pixels; mean validation Dice: "
      f"TensorFlow {results['frameworks']['tf']['metrics']['val_dice']:.4f}, "
      f"PyTorch {results['frameworks']['torch']['metrics']['val_dice']:.4f}")

# %% [markdown]
# Five epochs on 32 photos of 32x32 pixels learn a blurry car at best: compare the Dice with that of a mask that is
# all car (the grey line above). What matters here is that the two columns agree.
#
# ## Kaggle's run-length encoding, decoded back
#
# Each side wrote `submit.csv.gz`: one row per test photo, `img,rle_mask`, the mask upsampled to the photo's
# 1918x1280 and written as pairs "start length" of car pixels, counted from 1, top to bottom, then left to right
# (column-major). `shared/rle.py` reads it back:

# %%
submissions = {side: read_rle_csv(out / side / "submit.csv.gz") for side in ("tf", "torch")}
name, text = next(iter(submissions["tf"].items()))
print(f"{len(submissions['tf'])} test photos; {name}: {text[:80]}{' ...' if len(text) > 80 else ''}")
masks = {side: rle_decode(submissions[side][name], (1280, 1918)) for side in ("tf", "torch")}
assert rle_encode(masks["tf"]) == text  # decoded and encoded again: the same text
figure, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for axis, (side, title) in zip(axes, (("tf", "TensorFlow"), ("torch", "PyTorch"))):
    axis.imshow(masks[side], cmap="gray")
    axis.set_title(f"{title}: {name}, decoded (1280x1918)", fontsize=9)
    axis.axis("off")
plt.show()
print(f"{name}: the two decoded masks agree on {pixel_agreement(masks['tf'], masks['torch']):.3%} of its pixels")

# %% [markdown]
# ## Pointing it at real data
#
# - The real Carvana photos: accept the competition's rules on kaggle.com, put your API token in
#   `~/.kaggle/kaggle.json`, then `python compare.py --task unet --download`, or unpack
#   `train.zip`, `train_masks.zip` and `test.zip` yourself and pass `--data-dir FOLDER`.
# - Your own photos: a folder with `images/` and `masks/` (a mask per image, same stem), with `--data-dir FOLDER`.
# - The size: `--recipe quality` (128x128, 20 epochs); `--full-size`, the paper's width (64) on 640x960 inputs.
#
# Details: docs/data.md and docs/unet-training.md. Every run writes the same folder as this one did, and
# `python compare.py --predict RUN_DIR` predicts new photos with its trained weights (docs/predict.md).
