"""`compare.py --predict RUN_DIR` as a user runs it, on run folders built by hand from canonical weights (a tiny
U-Net, a small mlp) and tiny generated photos: both sides' predictions and their agreement, one side's weights on
both sides, photos of odd sizes, a kill and --resume giving the same submission byte for byte, resident memory on
2,000 photos, digit images classified with both sides' log-probabilities within the tolerance, and every bad input
as one line and exit status 2 with nothing lost. Every CLI run of the file starts at once (module fixture); the
framework-free parts are checked in this process."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import COMPARE, USER_DIR
from harness.registry import TOLERANCES
from shared.data.synthetic_cars import generate_synthetic_carvana
from shared.init import init_weights
from shared.rle import rle_decode, rle_encode
from shared.tasks import make_spec
from shared.weights import mlp_layout, save_weights, unet_layout

WIDTH, HEIGHT = 96, 64  # the generated photos
UNET = {"base_filters": 2, "image_size": 32}
MLP = {"layer_sizes": (784, 32, 32, 10)}
MANY = 2000  # photos of the memory and kill/resume runs


def run_cli(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, COMPARE, *args], cwd=USER_DIR, env=environment(cache),
                          capture_output=True, text=True, timeout=timeout)


def environment(cache: Path) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TWINNETS_CACHE": str(cache)}


def make_run(folder: Path, task: str, spec_fields: dict, weights: dict, data: dict, name: str) -> Path:
    """A training run's folder as compare.py leaves it: results.json, and each side's canonical weights (final and
    the last epoch's checkpoint)."""
    spec = make_spec(task, **spec_fields)
    for side, tensors in weights.items():
        save_weights(tensors, folder / side / name)
        save_weights(tensors, folder / side / "checkpoint" / "epoch-1" / "model.safetensors")
    results = {"task": task, "config": {**spec.to_dict(), "frameworks": list(weights), "threads": 1},
               "data": data, "frameworks": {side: {} for side in weights}}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def unet_weights(seed: int, base_filters: int = UNET["base_filters"]) -> dict:
    spec = make_spec("unet", **{**UNET, "base_filters": base_filters})
    return init_weights(unet_layout(spec), seed)


def nudged(weights: dict, scale: float = 1e-3) -> dict:
    """The same weights a little apart, as two sides' trainings end: each side has its own trained model."""
    rng = np.random.default_rng(7)
    return {k: (v + scale * np.abs(v).mean() * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in
            weights.items()}


def odd_photos(folder: Path, source: Path) -> list[str]:
    """Photos of odd sizes and formats cut from a generated one, and one that cannot be read."""
    folder.mkdir(parents=True)
    photo = Image.open(source).convert("RGB")
    photo.resize((37, 53)).save(folder / "a-tall.png")
    photo.resize((101, 67)).save(folder / "b-wide.jpg", quality=85)
    photo.convert("RGBA").resize((80, 80)).save(folder / "c-alpha.png")
    photo.convert("L").resize((150, 40)).save(folder / "d-grey.png")
    (folder / "e-broken.jpg").write_bytes(Path(folder / "b-wide.jpg").read_bytes()[:300])
    (folder / "notes.txt").write_text("not a photo: ignored in a folder")
    return ["a-tall.png", "b-wide.jpg", "c-alpha.png", "d-grey.png"]


def digit_pngs(folder: Path) -> list[str]:
    """scikit-learn's digits drawn as a user would hand them in: 28x28, larger, dark ink on white paper, RGB."""
    from shared.data.mnist import load_digits_28

    folder.mkdir(parents=True)
    digits = load_digits_28(seed=0, train_copies=0).test_images[:6, ..., 0]
    names = []
    for i, digit in enumerate(digits):
        gray = (digit * 255).round().astype(np.uint8)
        if i % 3 == 0:
            image = Image.fromarray(gray)  # MNIST's own form
        elif i % 3 == 1:
            image = Image.fromarray(255 - gray).resize((90, 120), Image.BILINEAR)  # on paper, another size
        else:
            image = Image.fromarray(gray).resize((64, 64)).convert("RGB")
        names.append(f"digit-{i}.png")
        image.save(folder / names[-1])
    return names


def kill_and_resume(args: tuple, out: Path, cache: Path) -> dict:
    """Kill the prediction (parent and worker) with SIGKILL once in each side's stream of rows, then --resume it
    to the end."""
    kills = []
    process = subprocess.Popen([sys.executable, COMPARE, *args, "--out", str(out)], cwd=USER_DIR,
                               env=environment(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    for side in ("tf", "torch"):
        progress, deadline = out / side / "progress.json", time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if json.loads(progress.read_text())["rows"] > 0:  # synced after the first batch, then every second
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        kills.append(json.loads(progress.read_text())["next"] if progress.is_file() else None)
        left = (out / "job.json").is_file()
        if side == "tf":  # the resumed run is killed in its turn, inside PyTorch's rows
            process = subprocess.Popen([sys.executable, COMPARE, "--resume", str(out)], cwd=USER_DIR,
                                       env=environment(cache), stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
    resumed = run_cli("--resume", str(out), cache=cache)
    return {"kills": kills, "resumed": resumed, "left_after_kill": left}


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    cache = base / "cache"
    data = generate_synthetic_carvana(base / "carvana", n_cars=1, n_test_cars=1, size=(WIDTH, HEIGHT))
    test_photos = sorted((data / "test").glob("*.jpg"))
    tf_weights = unet_weights(0)
    unet_run = make_run(base / "unet-run", "unet", UNET, {"tf": tf_weights, "torch": nudged(tf_weights)},
                        {"source": "carvana", "location": str(data)}, "model.safetensors")
    mlp_run = make_run(base / "mlp-run", "mlp", MLP, {s: init_weights(mlp_layout(make_spec("mlp", **MLP)), 0)
                                                      for s in ("tf", "torch")},
                       {"source": "sklearn-digits", "location": "sklearn.datasets.load_digits"},
                       "checkpoint.safetensors")
    odd = odd_photos(base / "odd", test_photos[0])
    digits = digit_pngs(base / "digits")
    many = base / "many"
    many.mkdir()
    for i in range(MANY):  # hard links: 2,000 photos to read, without 2,000 to generate
        os.link(test_photos[i % len(test_photos)], many / f"{i:04d}_{test_photos[i % len(test_photos)].name}")
    bad_photo = base / "bad-photo"
    shutil.copytree(data / "test", bad_photo)
    (bad_photo / "zz-unreadable.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
    bad = bad_inputs(base, unet_run, data)
    base_args = ("--task", "unet", "--threads", "1")
    many_args = (*base_args, "--predict", str(unet_run), "--images", str(many), "--preview", "0", "--batch-size", "64")
    jobs = {
        "own": (*base_args, "--predict", str(unet_run), "--preview", "3", "--out", str(base / "own")),
        "same": (*base_args, "--predict", str(unet_run), "--weights-from", "tf", "--images", str(base / "odd"),
                 str(test_photos[1]), "--skip-bad", "--out", str(base / "same")),
        "unreadable": (*base_args, "--predict", str(unet_run), "--images", str(bad_photo), "--frameworks", "torch",
                       "--out", str(base / "unreadable")),
        "many": (*many_args, "--out", str(base / "many-out")),
        "digits": ("--task", "mlp", "--threads", "1", "--predict", str(mlp_run), "--images", str(base / "digits"),
                   "--out", str(base / "digits-out")),
        "digits-test-set": ("--predict", str(mlp_run), "--threads", "1", "--in-process", "--out",
                            str(base / "digits-test")),
        **{case: args for case, (args, _) in bad.items()},
    }
    before = digest(unet_run)
    with ThreadPoolExecutor(max_workers=3) as pool:
        killed = pool.submit(kill_and_resume, many_args, base / "killed", cache)
        futures = {case: pool.submit(run_cli, *args, cache=cache) for case, args in jobs.items()}
        completed = {case: future.result() for case, future in futures.items()}
        completed["killed"] = killed.result()
    return {"base": base, "data": data, "completed": completed, "odd": odd, "digits": digits, "bad": bad,
            "test_photos": test_photos, "run_unchanged": digest(unet_run) == before, "unet_run": unet_run}


def bad_inputs(base: Path, unet_run: Path, data: Path) -> dict[str, tuple[tuple, str]]:
    """Each bad input a user may give: (the command's arguments, what its one line must name)."""
    weightless = base / "weightless-run"
    weightless.mkdir()
    shutil.copy(unet_run / "results.json", weightless / "results.json")
    wider = save_weights(unet_weights(0, base_filters=4), base / "wider.safetensors")
    corrupt = base / "corrupt.safetensors"
    corrupt.write_bytes(os.urandom(4096))
    truncated = base / "truncated.safetensors"
    truncated.write_bytes((unet_run / "tf" / "model.safetensors").read_bytes()[:5000])
    empty = base / "empty-folder"
    empty.mkdir()
    kept = base / "kept-out"
    kept.mkdir()
    (kept / "keep.txt").write_text("an earlier prediction")
    common = ("--task", "unet", "--threads", "1")
    run = ("--predict", str(unet_run))
    return {
        "no weights": ((*common, "--predict", str(weightless), "--out", str(base / "x1")),
                       str(weightless / "tf" / "model.safetensors")),
        "another width": ((*common, *run, "--weights", str(wider), "--out", str(kept), "--overwrite"),
                          f"{wider}: weights of another architecture or width: enc1.conv1.weight is (4, 3, 3, 3) "
                          "but the U-Net of the run (padded, --base-filters 2, depth 4) needs (2, 3, 3, 3)"),
        "corrupt weights": ((*common, *run, "--weights", str(corrupt), "--out", str(base / "x3")), str(corrupt)),
        "truncated weights": ((*common, *run, "--weights", str(truncated), "--out", str(base / "x4")), str(truncated)),
        "empty image folder": ((*common, *run, "--images", str(empty), "--out", str(base / "x5")), str(empty)),
        "checkpoint gone": ((*common, *run, "--checkpoint", "3", "--out", str(base / "x6")),
                            "epoch 1 is there"),
        "not a run folder": ((*common, "--predict", str(data), "--out", str(base / "x7")), str(data)),
    }


def completed_ok(runs, case: str) -> dict:
    completed = runs["completed"][case]
    assert completed.returncode == 0, (
        f"exit {completed.returncode}\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    return json.loads((runs["base"] / out_name(case) / "results.json").read_text())


def out_name(case: str) -> str:
    return {"many": "many-out", "digits": "digits-out", "digits-test-set": "digits-test"}.get(case, case)


def submission(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", newline="") as handle:
        return list(csv.reader(handle))


def test_both_sides_predict_the_run_and_their_masks_are_compared(runs):
    results = completed_ok(runs, "own")
    out = runs["base"] / "own"
    names = [p.name for p in runs["test_photos"]]
    assert results["mode"] == "predict" and results["checkpoint"] == "final" and not (out / "job.json").exists()
    masks = {}
    for side in ("tf", "torch"):
        found = results["frameworks"][side]
        assert found["weights"]["trained_by"] == side and found["rows"] == len(names) and found["skipped"] == []
        assert found["timing"]["photos_per_s"] > 0 and found["timing"]["model_photos_per_s"] > 0
        rows = submission(out / side / "submit.csv.gz")
        assert rows[0] == ["img", "rle_mask"] and [name for name, _ in rows[1:]] == names
        masks[side] = [rle_decode(rle, (HEIGHT, WIDTH)) for _, rle in rows[1:]]  # at the photos' original size
        previews = [out / preview for preview in found["artifacts"]["previews"]]  # relative to the run folder
        assert len(previews) == 3 and all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in previews)
        assert Image.open(previews[0]).size == (3 * WIDTH, HEIGHT)  # photo | mask | outline
    agreement = results["agreement"]
    assert agreement["weights"] == "own" and agreement["pixels"] == len(names) * WIDTH * HEIGHT
    same = sum(int(np.sum(a == b)) for a, b in zip(masks["tf"], masks["torch"]))
    assert agreement["agreeing_pixels"] == same, "the agreement computed on runs equals the unpacked masks'"
    assert agreement["identical_rows"] == sum(np.array_equal(a, b) for a, b in zip(masks["tf"], masks["torch"]))
    shares = [found["agreement"] for found in agreement["lowest"]]
    assert len(shares) == 10 and shares == sorted(shares)
    with open(out / "agreement.csv", newline="") as handle:
        per_photo = list(csv.DictReader(handle))
    assert len(per_photo) == len(names) and min(float(r["agreement"]) for r in per_photo) == pytest.approx(shares[0])
    report = (out / "report.md").read_text()
    assert "lowest agreement" in report and "tf/preview/000-" in report
    assert "agreement each side with its own trained weights" in runs["completed"]["own"].stdout
    assert runs["run_unchanged"], "predicting must not touch the run folder"


def test_one_sides_weights_on_both_sides_on_photos_of_odd_sizes(runs):
    """--weights-from tf: PyTorch serves the model TensorFlow trained; the two agree on >= 99.9% of the pixels. The
    --images are a folder of PNG/JPEG photos of odd sizes (one unreadable, skipped and listed) and a file."""
    results = completed_ok(runs, "same")
    out = runs["base"] / "same"
    sizes = {"a-tall.png": (53, 37), "b-wide.jpg": (67, 101), "c-alpha.png": (80, 80), "d-grey.png": (40, 150),
             runs["test_photos"][1].name: (HEIGHT, WIDTH)}
    for side in ("tf", "torch"):
        found = results["frameworks"][side]
        assert found["weights"]["trained_by"] == "tf" and found["weights"]["file"].endswith("tf/model.safetensors")
        assert [Path(s["photo"]).name for s in found["skipped"]] == ["e-broken.jpg"]
        assert "e-broken.jpg" in found["skipped"][0]["error"] and "\n" not in found["skipped"][0]["error"]
        rows = submission(out / side / "submit.csv.gz")[1:]
        assert [name for name, _ in rows] == [*runs["odd"], runs["test_photos"][1].name]
        for name, rle in rows:
            assert rle_decode(rle, sizes[name]).shape == sizes[name]
    agreement = results["agreement"]
    assert agreement["weights"] == "same" and agreement["agreement"] >= 0.999, agreement
    assert "e-broken.jpg" in (out / "report.md").read_text()


def test_a_killed_prediction_resumes_to_the_same_submission_byte_for_byte(runs):
    killed = runs["completed"]["killed"]
    assert killed["left_after_kill"], "job.json stays after a kill: the prediction is resumable"
    tf_next, torch_next = killed["kills"]
    assert tf_next is not None and 0 < tf_next < MANY, f"the first kill missed TensorFlow's rows ({tf_next})"
    assert torch_next is not None and 0 < torch_next < MANY, f"the second kill missed PyTorch's rows ({torch_next})"
    resumed = killed["resumed"]
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "finished before" in resumed.stdout and "continuing after photo" in resumed.stdout
    whole = completed_ok(runs, "many")
    again = json.loads((runs["base"] / "killed" / "results.json").read_text())
    for side in ("tf", "torch"):
        assert again["frameworks"][side]["resumed"] >= 1 and again["frameworks"][side]["rows"] == MANY
        a, b = (gzip.decompress((folder / side / "submit.csv.gz").read_bytes())
                for folder in (runs["base"] / "killed", runs["base"] / "many-out"))
        assert a == b, f"{side}: the resumed submission differs from the uninterrupted one"
        assert not (runs["base"] / "killed" / side / "submit.csv.part").exists()
    assert again["agreement"]["agreeing_pixels"] == whole["agreement"]["agreeing_pixels"]


def test_memory_stays_bounded_over_2000_photos(runs):
    """Streamed: each side's resident memory after 2,000 photos is within 300 MB of what it was after 100."""
    results = completed_ok(runs, "many")
    for side in ("tf", "torch"):
        found = results["frameworks"][side]
        assert found["rows"] == MANY and len(submission(runs["base"] / "many-out" / side / "submit.csv.gz")) == MANY + 1
        memory = found["memory"]
        assert memory["rss_mb_after_first_100"] > 0, memory
        assert memory["growth_mb"] < 300, f"{side}: resident memory grew by {memory['growth_mb']:.0f} MB"


def test_digit_images_get_classes_and_both_sides_log_probabilities_agree(runs):
    results = completed_ok(runs, "digits")
    out = runs["base"] / "digits-out"
    tolerance = TOLERANCES["mlp"]["forward"]
    tables = {}
    for side in ("tf", "torch"):
        with open(out / side / "predictions.csv", newline="") as handle:
            rows = list(csv.reader(handle))
        assert rows[0][:2] == ["image", "class"] and rows[0][2:] == [f"log_p{k}" for k in range(10)]
        assert [row[0] for row in rows[1:]] == runs["digits"] and all(0 <= int(row[1]) <= 9 for row in rows[1:])
        tables[side] = np.array([[float(v) for v in row[2:]] for row in rows[1:]])
        np.testing.assert_allclose(np.exp(tables[side]).sum(axis=1), 1.0, atol=1e-5)  # log-probabilities
    diff = float(np.max(np.abs(tables["tf"] - tables["torch"])))
    assert diff <= tolerance and results["agreement"]["max_abs_diff"] == pytest.approx(diff, abs=1e-12)
    assert results["agreement"]["passed"] and results["agreement"]["same_class"] == len(runs["digits"])

    test_set = completed_ok(runs, "digits-test-set")  # no --images: the run's own test digits, with their labels
    assert test_set["data"]["source"] == "sklearn-digits" and test_set["agreement"]["passed"]
    assert 0.0 <= test_set["frameworks"]["torch"]["metrics"]["test_accuracy"] <= 1.0


def test_an_unreadable_photo_stops_the_prediction_in_one_line_keeping_the_rows_before_it(runs):
    completed = runs["completed"]["unreadable"]
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2 and len(lines) == 1, completed.stderr[-3000:]
    assert lines[0].startswith("compare.py: error: ") and "zz-unreadable.jpg" in lines[0]
    out = runs["base"] / "unreadable"
    progress = json.loads((out / "torch" / "progress.json").read_text())
    assert progress["rows"] == len(runs["test_photos"]), "the photos before the bad one keep their rows"
    part = (out / "torch" / "submit.csv.part").read_bytes()[:progress["bytes"]].decode().splitlines()
    assert len(part) == 1 + len(runs["test_photos"]) and (out / "job.json").is_file()


@pytest.mark.parametrize("case", ["no weights", "another width", "corrupt weights", "truncated weights",
                                  "empty image folder", "checkpoint gone", "not a run folder"])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(runs, case):
    completed = runs["completed"][case]
    lines = completed.stderr.strip().splitlines()
    assert completed.returncode == 2, f"exit {completed.returncode}\n{completed.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("compare.py: error: "), completed.stderr[-3000:]
    assert runs["bad"][case][1] in lines[0], lines[0]
    assert "== TensorFlow" not in completed.stdout and "== PyTorch" not in completed.stdout
    out = Path(runs["bad"][case][0][runs["bad"][case][0].index("--out") + 1])
    if case == "another width":  # --overwrite into a folder of earlier results: they are untouched
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()


# ---- the framework-free parts, in this process -------------------------------------------------------------

def test_overlap_of_two_run_length_masks_equals_the_unpacked_masks():
    from harness.predict.agreement import overlap, runs_of

    rng = np.random.default_rng(0)
    for density in (0.0, 0.02, 0.5, 0.97, 1.0):
        a, b = (rng.random((13, 17)) < density for _ in range(2))
        b[rng.random(b.shape) < 0.3] ^= True
        assert overlap(runs_of(rle_encode(a)), runs_of(rle_encode(b))) == int(np.sum(a & b)), density


def test_resumable_rows_continue_after_the_last_synced_row(tmp_path):
    from harness.predict.rows import PART, ResumableRows

    rows = ResumableRows(tmp_path)
    rows.add(["a.jpg,1 2\n", "b.jpg,\n"], 2, [], 0.1, 0.05, force=True)
    rows.add(["c.jpg,3 4\n"], 3, [], 0.1, 0.05)  # not synced yet: a kill here loses it
    rows._handle.flush()  # ... even though its bytes reached the part file
    rows.close()
    again = ResumableRows(tmp_path)
    assert again.start == 2 and again.state["resumed"] == 1
    assert (tmp_path / PART).read_bytes() == b"img,rle_mask\na.jpg,1 2\nb.jpg,\n"
    again.add(["c.jpg,3 4\n"], 3, [], 0.1, 0.05)
    path = again.finish(tmp_path / "submit.csv.gz")
    assert gzip.decompress(path.read_bytes()) == b"img,rle_mask\na.jpg,1 2\nb.jpg,\nc.jpg,3 4\n"


def test_digits_are_resampled_the_mnist_way():
    from harness.predict.digits import mnist_way
    from shared.data.mnist import load_digits_28

    digits = load_digits_28(seed=0, train_copies=0).test_images[:20, ..., 0]
    for digit in digits:
        gray = (digit * 255).round().astype(np.uint8)
        assert np.array_equal(mnist_way(gray), gray.astype(np.float32) / 255.0), "28x28 white on black: kept as it is"
        on_paper = np.asarray(Image.fromarray(255 - gray).resize((140, 200), Image.BILINEAR))
        back = mnist_way(on_paper)
        assert back.shape == (28, 28) and back.max() > 0.5
        assert np.corrcoef(back.ravel(), digit.ravel())[0, 1] > 0.6  # the same digit, inverted and boxed again
    assert not mnist_way(np.full((50, 30), 255, np.uint8)).any(), "a blank page is a blank digit"


def test_a_photo_is_read_upright_as_its_exif_says(tmp_path):
    from shared.data.carvana.decode import read_photo

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # held turned by 90 degrees
    photo.save(tmp_path / "turned.jpg", exif=exif.tobytes())
    image, size = read_photo(tmp_path / "turned.jpg")
    assert size == (30, 50) and image.shape == (50, 30, 3)
    small, size = read_photo(tmp_path / "turned.jpg", (16, 16))
    assert small.shape == (16, 16, 3) and size == (30, 50)
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    (tmp_path / "plain.png").write_bytes(buffer.getvalue())
    assert read_photo(tmp_path / "plain.png")[1] == (50, 30)
