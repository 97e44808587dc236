"""Data-parallel training: one step with 2 processes on a global batch gives the weights and BatchNorm
running statistics of one step with 1 process on that batch, on each side (torchrun + gloo; two
MultiWorkerMirroredStrategy workers on loopback ports); only rank 0 writes; the split of a global batch."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import side_module
from harness import launch
from harness.registry import TOLERANCES
from shared import data_parallel, distributed
from shared.callbacks import Callback
from shared.data.batches import batch_indices
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.errors import UserError
from shared.init import init_weights
from shared.tasks import make_spec
from shared.weights import load_weights_file, save_weights, unet_layout

# A step with 2 processes against a step with 1, max |difference| of every exported tensor.
TOLERANCE = TOLERANCES["unet"]["data_parallel_step"]
# lr 1.0: a large first step (SGD's momentum buffer starts at the gradient), so that an error in the gradient
# (a missing loss scaling, unsynchronised BatchNorm) moves the weights far beyond the tolerance.
SPEC = {"image_size": 32, "base_filters": 4, "depth": 4, "batch_size": 4, "lr": 1.0}
NPROC = 2
# Over several steps SGD with momentum 0.99 amplifies rounding: a 1e-7 change of the initial weights moves the
# weights by ~1e-4 after 8 steps, so a whole epoch is held to the k-step tolerance (docs/equivalence.md) for the losses.
LOOP_TOLERANCE = {quantity: TOLERANCES["unet"]["data_parallel_epoch"] for quantity in ("loss", "weights")}
LAUNCH_TIMEOUT_S = 180
LAUNCHERS = {"torch": launch.launch_torch, "tf": launch.launch_tf}


def global_batch(spec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy photos with a bright rectangle, and its mask: a global batch whose halves differ."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.4, (spec.batch_size, spec.image_size, spec.image_size, 3)).astype(np.float32)
    masks = np.zeros((spec.batch_size, spec.image_size, spec.image_size), np.float32)
    for i in range(spec.batch_size):
        top, left = rng.integers(0, spec.image_size // 2, 2)
        masks[i, top:top + spec.image_size // 3, left:left + spec.image_size // 4] = 1
    images += 0.55 * masks[..., None]
    return images, masks


@pytest.fixture(scope="module")
def step_inputs(tmp_path_factory):
    """The canonical initial weights and a global batch, written once for every process to read."""
    folder = tmp_path_factory.mktemp("step-inputs")
    spec = make_spec("unet", **SPEC)
    canonical = init_weights(unet_layout(spec), spec.seed)
    images, masks = global_batch(spec)
    return {"spec": spec, "canonical": canonical, "images": images, "masks": masks,
            "weights": save_weights(canonical, folder / "initial.safetensors"),
            "batch": distributed.save_batch(folder / "batch.npz", images, masks)}


def one_process_step(side: str, step_inputs, output, images=None, masks=None) -> dict:
    """The reference: the same shared run_step with this side, in this process, world size 1 (no process group,
    no strategy)."""
    module = side_module(side, "distributed")
    context = module.setup()
    assert context.world == 1 and context.rank == 0
    path = data_parallel.run_step(module, context, step_inputs["spec"], step_inputs["canonical"],
                                  step_inputs["images"] if images is None else images,
                                  step_inputs["masks"] if masks is None else masks, output)
    return load_weights_file(path)


def classifier_step(side: str, step_inputs) -> dict:
    """The project's single-process trainer, CarvanaClassifier.train_step, on the same batch: what the
    one-process reference must equal."""
    spec, canonical = step_inputs["spec"], step_inputs["canonical"]
    model = side_module(side, "unet").build(spec)
    side_module(side, "weights").load_weights(model, canonical)
    classifier = side_module(side, "classifier").CarvanaClassifier(model, 1, spec, verbose=False)
    data = side_module(side, "data")
    images, masks = data.to_tensor_images(step_inputs["images"]), data.to_tensor_images(step_inputs["masks"][..., None])
    if side == "torch":
        model.train()  # the TensorFlow trainer traces its step on the first call
    classifier.train_step(images, masks)
    return side_module(side, "weights").export_weights(model)


def launched_step(side: str, step_inputs, output):
    """The same step by NPROC processes: torchrun (gloo) or NPROC TF_CONFIG workers on loopback ports."""
    job = distributed.Job("step", dict(SPEC), str(output), str(step_inputs["weights"]), str(step_inputs["batch"]))
    path = job.write(output.parent / f"{side}-job.json")
    launched = LAUNCHERS[side](NPROC, ["-m", f"{side}_impl.distributed", str(path)], timeout=LAUNCH_TIMEOUT_S)
    assert launched.ok, launched.describe()
    return launched


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---- 1, 2, 3: the step, across scale, on each side ----------------------------------------------------------

@pytest.mark.parametrize("side", ["torch", "tf"])
def test_two_processes_take_the_step_of_one(side, step_inputs, tmp_path):
    """Every weight and BatchNorm running statistic after one step with 2 processes on the global batch equals
    the one-process step within TOLERANCE; only rank 0 writes."""
    reference = one_process_step(side, step_inputs, tmp_path / "one")
    trainer = classifier_step(side, step_inputs)
    assert max(max_abs(trainer[name], reference[name]) for name in reference) <= TOLERANCE / 10, (
        f"{side}: the one-process run_step is not CarvanaClassifier.train_step")
    launched = launched_step(side, step_inputs, tmp_path / "two")
    # Rank 0 wrote the weights, and nothing else; rank 1 says it wrote nothing.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["weights.safetensors"]
    log = "\n".join(launched.outputs)
    assert f"rank 0/{NPROC}: wrote" in log and f"rank 1/{NPROC}: wrote nothing" in log, log[-2000:]

    parallel = load_weights_file(tmp_path / "two" / "weights.safetensors")
    canonical = step_inputs["canonical"]
    assert set(parallel) == set(reference) == set(canonical)
    diffs = {name: max_abs(parallel[name], reference[name]) for name in reference}
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= TOLERANCE, f"{side}: {worst} differs by {diffs[worst]:.3e} after the 2-process step"
    moved = max(max_abs(reference[name], canonical[name]) for name in canonical if "running" not in name)
    assert moved > 1e3 * TOLERANCE, f"{side}: the weights hardly moved ({moved:.2e}): the comparison proves little"

    # The running statistics are the global batch's, not those of rank 0's half alone.
    half = one_process_step(side, step_inputs, tmp_path / "half", step_inputs["images"][:2], step_inputs["masks"][:2])
    apart = max(max_abs(parallel[name], half[name]) for name in canonical if "running" in name)
    assert apart > 100 * TOLERANCE, f"{side}: the running statistics look like rank 0's half alone"
    print(f"{side}: max |2 processes - 1 process| = {diffs[worst]:.2e} ({worst}); weights moved up to {moved:.2e}")


@pytest.fixture(scope="module")
def tiny_carvana(tmp_path_factory):
    return generate_synthetic_carvana(tmp_path_factory.mktemp("loop") / "carvana", n_cars=2, n_test_cars=1,
                                      size=(192, 128))


LOOP_SPEC = {**SPEC, "lr": 0.01, "epochs": 1, "validation_size": 0.5}  # 1 car (16 photos) to train: 4 batches


def test_two_processes_train_an_epoch_like_one(tmp_path, tiny_carvana):
    """The whole loop with torchrun: one epoch of the shared order, each rank loading its own share of every
    global batch; the batch losses follow one process' within the k-step tolerance (docs/equivalence.md), and rank 0
    alone writes the checkpoint, the weights and the history. (The TensorFlow loop is tested in one process below;
    its 2-worker run is the step above, repeated.)"""
    data_dir, spec_fields = tiny_carvana, LOOP_SPEC
    job = distributed.Job("train", spec_fields, str(tmp_path / "two"), data_dir=str(data_dir))
    launched = launch.launch_torch(NPROC, ["-m", "torch_impl.distributed", str(job.write(tmp_path / "job.json"))],
                                   timeout=LAUNCH_TIMEOUT_S)
    assert launched.ok, launched.describe()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint", "history.json", "weights.safetensors"]
    assert f"rank 1/{NPROC}: wrote nothing" in launched.outputs[0]

    module = side_module("torch", "distributed")
    history = module.train(module.setup(), make_spec("unet", **spec_fields), data_dir, tmp_path / "one")
    one = json.loads((tmp_path / "one" / "history.json").read_text())
    two = json.loads((tmp_path / "two" / "history.json").read_text())
    assert (one["world"], two["world"]) == (1, NPROC)
    assert len(one["batch_losses"]) == len(two["batch_losses"]) == 4
    relative = np.abs(np.subtract(two["batch_losses"], one["batch_losses"])) / np.abs(one["batch_losses"])
    assert relative.max() <= LOOP_TOLERANCE["loss"], (one["batch_losses"], two["batch_losses"])
    val_loss = history[0]["val_loss"]
    assert abs(two["history"][0]["val_loss"] - val_loss) <= LOOP_TOLERANCE["loss"] * val_loss
    weights = {name: load_weights_file(tmp_path / name / "weights.safetensors") for name in ("one", "two")}
    worst = max(max_abs(weights["one"][k], weights["two"][k]) for k in weights["one"])
    assert worst <= LOOP_TOLERANCE["weights"], f"after an epoch: max |2 processes - 1 process| = {worst:.3e}"
    print(f"torch loop: max relative loss difference {relative.max():.2e}, max weight difference {worst:.2e}")


def test_tensorflow_loop_in_one_process_follows_pytorch(tmp_path, tiny_carvana):
    """The TensorFlow loop (world size 1, the default strategy) on the same epoch: the same batch losses as the
    PyTorch loop, the same files, and the callbacks called (on rank 0, the only one here)."""
    spec = make_spec("unet", **LOOP_SPEC)
    losses = {}
    for side in ("torch", "tf"):  # torch first: see conftest.py
        module, seen = side_module(side, "distributed"), []

        class Recorder(Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append((epoch, sorted(logs)))

        module.train(module.setup(), spec, tiny_carvana, tmp_path / side, callbacks=lambda model: [Recorder()])
        assert seen == [(1, ["dice", "epoch", "loss", "val_dice", "val_loss"])], seen
        assert sorted(p.name for p in (tmp_path / side).iterdir()) == ["checkpoint", "history.json",
                                                                       "weights.safetensors"]
        losses[side] = np.array(json.loads((tmp_path / side / "history.json").read_text())["batch_losses"])
    relative = np.abs(losses["tf"] - losses["torch"]) / losses["torch"]
    assert len(relative) == 4 and relative.max() <= LOOP_TOLERANCE["loss"], losses


def test_only_rank_0_writes(tmp_path, monkeypatch):
    weights = {"w": np.ones(3, np.float32)}
    assert data_parallel.save_on_chief(weights, tmp_path / "one.safetensors", process_rank=1) is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.is_chief()
    assert data_parallel.save_on_chief(weights, tmp_path / "two.safetensors") is None
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    assert data_parallel.save_on_chief(weights, tmp_path / "three.safetensors") == tmp_path / "three.safetensors"
    assert [p.name for p in tmp_path.iterdir()] == ["three.safetensors"]


# ---- 4: the split of a global batch, and the plumbing (shared, no framework) --------------------------------

def test_a_global_batch_splits_into_equal_contiguous_shards():
    batch = np.arange(8)
    shards = [distributed.shard(batch, r, 2) for r in range(2)]
    assert [s.tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert np.array_equal(np.concatenate([distributed.shard(batch, r, 4) for r in range(4)]), batch)
    assert np.array_equal(distributed.shard(batch, 0, 1), batch)


def test_an_unequal_split_is_refused_in_one_line():
    with pytest.raises(UserError) as raised:
        distributed.shard(np.arange(6), 0, 4)
    assert "\n" not in str(raised.value) and "multiple of 4" in str(raised.value)
    with pytest.raises(UserError):
        distributed.shard(np.arange(4), 2, 2)  # no rank 2 in a world of 2
    with pytest.raises(UserError):
        distributed.epoch_shards(10, 5, seed=0, epoch=1, process_rank=0, world=2)


def test_epoch_shards_follow_the_shared_batch_order():
    """Each rank takes its share of every global batch of shared.data.batches; together they are the batch.
    The ragged last batch (10 % 4 = 2 samples) is split too; 11 samples lose one, so the halves stay equal."""
    for n, dropped in ((10, 0), (11, 1)):
        ranks = [distributed.epoch_shards(n, 4, seed=3, epoch=2, process_rank=r, world=2) for r in range(2)]
        batches = batch_indices(n, 4, seed=3, epoch=2)
        assert len(ranks[0]) == len(ranks[1]) == len(batches)
        for batch, first, second in zip(batches, *ranks):
            assert len(first) == len(second)
            assert np.array_equal(np.concatenate([first, second]), batch[:len(batch) - len(batch) % 2])
        assert sum(len(s) for r in ranks for s in r) == n - dropped
    one = distributed.epoch_shards(11, 4, seed=3, epoch=2, process_rank=0, world=1)
    assert [b.tolist() for b in one] == [b.tolist() for b in batch_indices(11, 4, seed=3, epoch=2)]


def test_validation_averages_per_image():
    """The shared loop's validation weighs each batch by its size (shared.metrics.BatchAverage): 5 images in
    batches of 2 average like one pass over the 5, whichever side evaluates them."""

    class Images:  # image i is filled with i; its mask is empty
        def __len__(self):
            return 5

        def get(self, index, epoch=0):
            return np.full((2, 2, 3), index, np.float32), np.zeros((2, 2), np.float32)

    class Side:  # a batch's "loss" is its images' mean value, its "Dice" 1
        def evaluate(self, context, model, images, masks, threshold):
            return float(images.mean()), 1.0

    result = data_parallel.validate(Side(), None, None, Images(), batch_size=2, threshold=0.5)
    assert result == {"val_loss": pytest.approx(2.0), "val_dice": 1.0}  # the mean of 0..4, not of 0.5, 2.5 and 4


def test_rank_and_world_size_from_the_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert (distributed.rank(), distributed.world_size(), distributed.is_chief()) == (0, 1, True)
    configs = launch.local_tf_configs(3)
    workers = configs[0]["cluster"]["worker"]
    assert len(set(workers)) == 3 and all(w.startswith("127.0.0.1:") for w in workers)
    monkeypatch.setenv("TF_CONFIG", json.dumps(configs[2]))
    assert (distributed.rank(), distributed.world_size(), distributed.is_chief()) == (2, 3, False)
    monkeypatch.setenv("RANK", "1")  # torchrun's variables win
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (distributed.rank(), distributed.world_size()) == (1, 4)


def test_launch_commands_and_job_file(tmp_path):
    command = launch.torchrun_command(2, ["-m", "torch_impl.distributed", "job.json"], port=29511)
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "2" and command[-3:] == ["-m", "torch_impl.distributed",
                                                                                        "job.json"]
    assert "--master-port" in command and "29511" in command
    text = launch.multi_machine_commands(nnodes=2, nproc=4)
    assert "torchrun --nnodes 2 --nproc-per-node 4" in text and "--rdzv-endpoint" in text and "TF_CONFIG=" in text
    job = distributed.Job("step", {"image_size": 32}, str(tmp_path / "out"), "w.safetensors", "b.npz")
    assert distributed.read_job(job.write(tmp_path / "job.json")) == job
    (tmp_path / "bad.json").write_text('{"kind": "dance", "spec": {}, "output": "o"}')
    for bad in ("bad.json", "missing.json"):
        with pytest.raises(UserError):
            distributed.read_job(tmp_path / bad)
