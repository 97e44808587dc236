"""examples/: the real pairs of examples/README.md, each command on that page run as written (from the checkout,
with --in-process and --out added: tests/test_pair_cli.py runs the command with its worker processes) and its
verdict checked. The U-Net and the transformer take seconds; Keras' ResNet50 against torchvision's builds two
25-million-parameter models in float32 and in float64, so its full runs are marked slow."""
from __future__ import annotations

import shlex

import pytest

import compare
from conftest import ROOT
from harness.pair.flags import config_from_args
from harness.pair.run import run_pair
from shared.errors import UserError

README = ROOT / "examples" / "README.md"
UNET = "examples/unet_pair.py:keras_unet examples/unet_pair.py:torch_unet"
RESNET = "examples/resnet50_pair.py:keras_resnet50 examples/resnet50_pair.py:torch_resnet50"
RESNET_DEFAULTS = "examples/resnet50_pair.py:keras_resnet50 examples/resnet50_pair.py:torch_resnet50_defaults"
TRANSFORMER = "examples/transformer_pair.py:keras_encoder_block examples/transformer_pair.py:torch_encoder_block"
COMMANDS = {  # what follows `python compare.py` on the page
    "unet": f"--pair {UNET} --input-shape 2,3,32,32 --lr 0.0001",
    "resnet50 biases": f"--pair {RESNET} --input-shape 2,3,64,64 --lr 0.0001",
    "resnet50": f"--pair {RESNET} --input-shape 2,3,64,64 --lr 0.0001 --zero-unmatched-bias",
    "resnet50 defaults": f"--pair {RESNET_DEFAULTS} --input-shape 2,3,64,64 --lr 0.0001 --zero-unmatched-bias",
    "transformer": f"--pair {TRANSFORMER} --input-shape 2,6,16",
}


def run(name: str, tmp_path, monkeypatch) -> dict:
    """The page's command, in this process; results.json's "pair"."""
    monkeypatch.chdir(ROOT)  # its paths are relative to the checkout, where the page says to run it
    argv = [*shlex.split(COMMANDS[name]), "--in-process", "--out", str(tmp_path / "run")]
    args, _, _ = compare.parse_args(argv)
    return run_pair(config_from_args(args), quiet=True)["pair"]


def test_the_readme_gives_exactly_these_commands():
    prefix = "python compare.py "
    given = [line.removeprefix(prefix) for line in README.read_text().splitlines() if line.startswith(prefix)]
    assert sorted(given) == sorted(COMMANDS.values())


def test_twinnets_unet_keras_against_pytorch_is_equal(tmp_path, monkeypatch):
    pair = run("unet", tmp_path, monkeypatch)
    assert pair["verdict"] == "equal", pair["sentence"]
    assert pair["first_difference"] is None
    assert pair["parameters"] == {"tf": 122_461, "torch": 122_461}
    assert len(pair["mapping"]) == 41 and {p["by"] for p in pair["mapping"]} == {"name"}
    assert all(row["float64"]["rel"] < 1e-12 for row in pair["layers"])
    assert pair["drift"]["verdict"]["within_noise"] is True


def test_a_transformer_encoder_block_is_equal_up_to_rounding(tmp_path, monkeypatch):
    pair = run("transformer", tmp_path, monkeypatch)
    assert pair["verdict"] == "equal", pair["sentence"]
    assert pair["parameters"] == {"tf": 2_224, "torch": 2_224}
    assert [(p["keras"], p["torch"], p["by"]) for p in pair["mapping"]] == [
        (name, name, "name") for name in ("self_attn", "norm1", "linear1", "linear2", "norm2")]
    attention = pair["mapping"][0]
    assert attention["tensors"] == {"in_proj_weight": [48, 16], "in_proj_bias": [48], "out_proj.weight": [16, 16],
                                    "out_proj.bias": [16]}
    assert all(row["float64"]["rel"] < 1e-12 for row in pair["layers"])
    assert 0 < max(row["float32"]["rel"] for row in pair["layers"]) < 1e-5  # rounding, not zero: two frameworks


def test_resnet50_stops_at_the_convolution_biases_keras_alone_has(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"a bias on one side only: Keras 'conv1_conv' and PyTorch 'conv1': bias in "
                                        r"Keras alone \(and 52 more\).*--zero-unmatched-bias") as raised:
        run("resnet50 biases", tmp_path, monkeypatch)
    assert raised.value.exit_status == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resnet50_differs_first_where_keras_strides_the_1x1_convolution(tmp_path, monkeypatch):
    pair = run("resnet50", tmp_path, monkeypatch)
    first = pair["first_difference"]
    assert pair["verdict"] == "different", pair["sentence"]
    assert (first["stage"], first["keras"], first["torch"]) == ("forward", "conv3_block1_1_conv", "layer2.0.conv1")
    assert first["note"] == "output shapes differ: Keras (2, 128, 8, 8), PyTorch (2, 128, 16, 16)"
    assert "stride_differs" in [trap["name"] for trap in first["traps"]], first["traps"]
    # The 53 Keras biases zeroed, then the same parameters; every layer before the block agrees in float64.
    assert len(pair["handled"]) == 53 and all(h.endswith("Keras bias set to zero") for h in pair["handled"])
    assert pair["parameters"] == {"tf": 25_583_592, "torch": 25_557_032}  # 26,560 biases apart
    before = pair["layers"][:next(i for i, row in enumerate(pair["layers"]) if row["real"])]
    assert len(before) > 30 and before[-1]["torch"].startswith("layer1.2.")
    assert all(row["float64"]["rel"] < 1e-12 for row in before)
    # Each block's shortcut found its partner, although the two frameworks run it at different points.
    mapped = {p["keras"]: p["torch"] for p in pair["mapping"]}
    for stage, layer in ((2, 1), (3, 2), (4, 3), (5, 4)):
        assert mapped[f"conv{stage}_block1_0_conv"] == f"layer{layer}.0.downsample.0"
        assert mapped[f"conv{stage}_block1_0_bn"] == f"layer{layer}.0.downsample.1"
        assert mapped[f"conv{stage}_block1_3_bn"] == f"layer{layer}.0.bn3"


@pytest.mark.slow
def test_resnet50_with_torchvisions_batchnorm_epsilon_differs_at_the_first_batchnorm(tmp_path, monkeypatch):
    pair = run("resnet50 defaults", tmp_path, monkeypatch)
    first = pair["first_difference"]
    assert pair["verdict"] == "different", pair["sentence"]
    assert (first["stage"], first["keras"], first["torch"]) == ("forward", "conv1_bn", "bn1")
    assert "batchnorm_epsilon" in [trap["name"] for trap in first["traps"]], first["traps"]
    assert 1e-10 < first["float64"]["rel"] < 1e-7  # 1.001e-5 against 1e-5: float64 keeps it, float32 rounds it away
