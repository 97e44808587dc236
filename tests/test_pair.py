"""--pair (harness/pair/, tf_impl/pair.py, torch_impl/pair.py): your own Keras model against your PyTorch port.
Small pairs written here, correct ones judged equal, and each known porting trap planted in one pair of its own: the
checker must name the layer where it sits and the trap. The checks run in this process (in_process=True, about a
second each); tests/test_pair_cli.py runs the command with its two worker processes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.pair import check_pair
from shared.errors import UserError
from shared.pair_layouts import from_canonical, to_canonical

KERAS_HEAD = "import keras\nfrom keras import layers\n\n"
TORCH_HEAD = "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n"
IMAGE = (2, 3, 8, 8)  # PyTorch's layout; the Keras models take (8, 8, 3)


def keras_model(*lines: str, shape: tuple = (8, 8, 3)) -> str:
    """A functional Keras model: `y = ...` lines applied in turn to x = keras.Input(shape)."""
    body = "\n".join(f"    {line}" for line in lines)
    return f"def build():\n    x = y = keras.Input({shape})\n{body}\n    return keras.Model(x, y)\n"


def torch_model(modules: dict[str, str], forward: str | None = None) -> str:
    """An nn.Module with the named modules, applied in order unless `forward` (its body's expression in x) says
    otherwise."""
    made = "\n".join(f"        self.{name} = {module}" for name, module in modules.items())
    flow = forward or "".join(f"self.{name}(" for name in reversed(modules)) + "x" + ")" * len(modules)
    return (f"class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n{made}\n\n"
            f"    def forward(self, x):\n        return {flow}\n")


CONV_K = 'y = layers.Conv2D(4, 3, padding="same", name="conv")(y)'
CONV_T = {"conv": "nn.Conv2d(3, 4, 3, padding=1)"}


def files(tmp_path: Path, keras: str, torch: str) -> tuple[str, str]:
    (tmp_path / "k.py").write_text(KERAS_HEAD + keras)
    (tmp_path / "t.py").write_text(TORCH_HEAD + torch)
    return f"{tmp_path / 'k.py'}:build", f"{tmp_path / 't.py'}:Net"


def checked(tmp_path: Path, keras: str, torch: str, shape=IMAGE, **settings) -> dict:
    return check_pair(*files(tmp_path, keras, torch), shape, out=tmp_path / "run", in_process=True,
                      **{"steps": 2, **settings})["pair"]


def assert_trap(pair: dict, trap: str, keras: str, torch: str, stage: str = "forward") -> None:
    """The verdict is "different", the first difference sits at these two layers, and the trap is named there."""
    first = pair["first_difference"]
    assert pair["verdict"] == "different", pair["sentence"]
    assert (first["stage"], first["keras"], first["torch"]) == (stage, keras, torch), pair["sentence"]
    assert trap in [found["name"] for found in first["traps"]], (pair["sentence"], first["traps"])
    assert all(found["fix"] for found in first["traps"])


# ---- correct pairs --------------------------------------------------------------------------------------------

def test_a_correct_pair_is_equal_and_the_flatten_rows_are_mapped(tmp_path):
    keras = keras_model(CONV_K, "y = layers.ReLU(name='relu')(y)", "y = layers.MaxPooling2D(2)(y)",
                        "y = layers.Flatten()(y)", 'y = layers.Dense(5, activation="relu", name="fc1")(y)',
                        'y = layers.Dense(3, name="fc2")(y)')
    pair = checked(tmp_path, keras,
                   torch_model({**CONV_T, "relu": "nn.ReLU()", "pool": "nn.MaxPool2d(2)", "flat": "nn.Flatten()",
                                "fc1": "nn.Linear(64, 5)", "act": "nn.ReLU()", "fc2": "nn.Linear(5, 3)"}))
    assert pair["verdict"] == "equal", pair["sentence"]
    assert pair["first_difference"] is None
    assert [(p["keras"], p["torch"], p["by"]) for p in pair["mapping"]] == [
        ("conv", "conv", "name"), ("fc1", "fc1", "name"), ("fc2", "fc2", "name")]
    assert any("rows reordered" in note for note in pair["mapping"][1]["notes"])
    compared = [(row["keras"], row["torch"]) for row in pair["layers"]]
    assert ("fc1", "act") in compared and ("relu", "relu") in compared  # a fused activation against its module
    assert all(row["float64"]["rel"] < 1e-12 for row in pair["layers"])
    assert pair["drift"]["verdict"]["within_noise"] is True


def test_a_transformer_block_maps_multi_head_attention_and_is_equal(tmp_path):
    keras = keras_model("a = layers.MultiHeadAttention(num_heads=2, key_dim=4, name='self_attn')(y, y)",
                        "y = layers.LayerNormalization(epsilon=1e-5, name='norm1')(layers.Add()([y, a]))",
                        "m = layers.Dense(16, activation='gelu', name='linear1')(y)",
                        "y = layers.LayerNormalization(epsilon=1e-5, name='norm2')(layers.Add()([y, "
                        "layers.Dense(8, name='linear2')(m)]))", shape=(5, 8))
    torch = torch_model({"layer": "nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=nn.GELU(), "
                                  "batch_first=True)"})
    pair = checked(tmp_path, keras, torch, shape=(2, 5, 8))
    assert pair["verdict"] == "equal", pair["sentence"]
    attention = next(p for p in pair["mapping"] if p["kind"] == "mha")
    assert (attention["keras"], attention["torch"]) == ("self_attn", "layer.self_attn")
    assert set(attention["tensors"]) == {"in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"}


def test_depthwise_transposed_and_pooled_layers_map_and_are_equal(tmp_path):
    keras = keras_model('y = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(y)',
                        'y = layers.Conv2DTranspose(4, 4, strides=2, padding="same", name="up")(y)',
                        "y = layers.GlobalAveragePooling2D()(y)", 'y = layers.Dense(3, name="fc")(y)')
    torch = torch_model({"dw": "nn.Conv2d(3, 6, 3, padding=1, groups=3)",
                         "up": "nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1)", "pool": "nn.AdaptiveAvgPool2d(1)",
                         "flat": "nn.Flatten()", "fc": "nn.Linear(4, 3)"})
    pair = checked(tmp_path, keras, torch)
    assert pair["verdict"] == "equal", pair["sentence"]


def test_an_embedding_and_conv1d_pair_on_token_ids_is_equal(tmp_path):
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.random.default_rng(1).integers(0, 10, (2, 6)))
    keras = ("def build():\n    x = keras.Input((6,), dtype='int64')\n"
             "    y = layers.Embedding(10, 4, name='embed')(x)\n"
             "    y = layers.Conv1D(5, 3, padding='same', name='conv')(y)\n"
             "    y = layers.Dense(2, name='fc')(layers.Flatten()(y))\n    return keras.Model(x, y)\n")
    torch = torch_model({"embed": "nn.Embedding(10, 4)", "conv": "nn.Conv1d(4, 5, 3, padding=1)",
                         "flat": "nn.Flatten()", "fc": "nn.Linear(30, 2)"},
                        "self.fc(self.flat(self.conv(self.embed(x).transpose(1, 2))))")
    pair = check_pair(*files(tmp_path, keras, torch), input=tokens, out=tmp_path / "run", in_process=True,
                      steps=2)["pair"]
    assert pair["verdict"] == "equal", pair["sentence"]


def test_keras_weights_go_the_other_way_with_from_keras_and_names_map_by_order(tmp_path):
    keras = keras_model('y = layers.Conv2D(4, 3, padding="same", name="block_a")(y)', "y = layers.Flatten()(y)",
                        'y = layers.Dense(3, name="head_b")(y)')
    torch = torch_model({"features": "nn.Conv2d(3, 4, 3, padding=1)", "flat": "nn.Flatten()",
                         "classifier": "nn.Linear(256, 3)"})
    keras_file, torch_file = files(tmp_path, keras, torch)
    results = check_pair(keras_file, torch_file, IMAGE, source="keras", out=tmp_path / "run", in_process=True,
                         steps=2)
    assert results["pair"]["verdict"] == "equal", results["pair"]["sentence"]
    assert [(p["keras"], p["torch"], p["by"]) for p in results["pair"]["mapping"]] == [
        ("block_a", "features", "order"), ("head_b", "classifier", "order")]
    assert results["config"]["source"] == "Keras"
    assert {"results.json", "report.md", "pair.png"} <= {p.name for p in (tmp_path / "run").iterdir()}
    assert "First difference" not in (tmp_path / "run" / "report.md").read_text()


def test_a_mapping_file_pins_pairs_by_name(tmp_path):
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"left": "b", "right": "a"}))
    keras = keras_model('y = layers.Dense(4, name="left")(y)', 'y = layers.Dense(4, name="right")(y)', shape=(4,))
    torch = torch_model({"b": "nn.Linear(4, 4)", "a": "nn.Linear(4, 4)"})
    pair = checked(tmp_path, keras, torch, shape=(2, 4), mapping=pins)
    assert [(p["keras"], p["torch"], p["by"]) for p in pair["mapping"]] == [("left", "b", "pinned"),
                                                                            ("right", "a", "pinned")]
    assert pair["verdict"] == "equal", pair["sentence"]


# ---- each trap planted in a pair of its own ---------------------------------------------------------------------

def test_batchnorm_epsilon(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.BatchNormalization(momentum=0.9, name="bn")(y)'),
                   torch_model({**CONV_T, "bn": "nn.BatchNorm2d(4)"}))
    assert_trap(pair, "batchnorm_epsilon", "bn", "bn")


def test_batchnorm_momentum(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.BatchNormalization(epsilon=1e-5, name="bn")(y)'),
                   torch_model({**CONV_T, "bn": "nn.BatchNorm2d(4)"}))
    assert_trap(pair, "batchnorm_momentum", "bn", "bn", stage="step")
    assert pair["first_difference"]["tensor"] == "bn.running_mean"


def test_batchnorm_running_variance_is_named_when_the_momentum_agrees(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.BatchNormalization(1e-5, momentum=0.9, name="bn")(y)'
                                         .replace("(1e-5, ", "(epsilon=1e-5, ")),
                   torch_model({**CONV_T, "bn": "nn.BatchNorm2d(4)"}))
    assert_trap(pair, "batchnorm_running_variance", "bn", "bn", stage="step")
    assert pair["first_difference"]["tensor"] == "bn.running_var"


def test_flatten_order(tmp_path):
    """The PyTorch port flattens a channels-last copy, as Keras does, while the weights are mapped PyTorch's way."""
    pair = checked(tmp_path, keras_model(CONV_K, "y = layers.Flatten(name='flat')(y)",
                                         'y = layers.Dense(3, name="fc")(y)'),
                   torch_model({**CONV_T, "flat": "nn.Flatten()", "fc": "nn.Linear(256, 3)"},
                               "self.fc(self.flat(self.conv(x).permute(0, 2, 3, 1)))"))
    assert_trap(pair, "flatten_order", "flat", "flat")


def test_same_padding_with_stride_two(tmp_path):
    pair = checked(tmp_path, keras_model('y = layers.Conv2D(4, 3, strides=2, padding="same", name="conv")(y)'),
                   torch_model({"conv": "nn.Conv2d(3, 4, 3, stride=2, padding=1)"}))
    assert_trap(pair, "same_padding_stride", "conv", "conv")
    assert "nn.ZeroPad2d((0, 1, 0, 1))" in pair["first_difference"]["traps"][0]["fix"]


def test_a_stride_on_another_layer(tmp_path):
    """Keras strides the 1x1 convolution, PyTorch the 3x3 after it (ResNet v1 against torchvision's v1.5)."""
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.Conv2D(4, 1, strides=2, name="reduce")(y)',
                                         'y = layers.Conv2D(4, 3, padding="same", name="mix")(y)'),
                   torch_model({**CONV_T, "reduce": "nn.Conv2d(4, 4, 1)", "mix": "nn.Conv2d(4, 4, 3, 2, padding=1)"}))
    assert_trap(pair, "stride_differs", "reduce", "reduce")
    assert pair["first_difference"]["note"] == "output shapes differ: Keras (2, 4, 4, 4), PyTorch (2, 4, 8, 8)"


def test_transposed_convolution_padding(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.Conv2DTranspose(2, 3, strides=2, padding="same", '
                                                 'name="up")(y)'),
                   torch_model({**CONV_T, "up": "nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)"}))
    assert_trap(pair, "transposed_conv_padding", "up", "up")


def test_channels_last_layers_fed_a_channels_first_input(tmp_path):
    keras, torch = files(tmp_path, keras_model("y = layers.Conv2D(4, 3, name='conv')(y)", shape=(3, 8, 8)),
                         torch_model({"conv": "nn.Conv2d(3, 4, 3)"}))
    with pytest.raises(UserError, match="channels-last layers fed a channels-first input") as raised:
        check_pair(keras, torch, IMAGE, out=tmp_path / "run", in_process=True)
    assert "Keras conv (conv2d" in str(raised.value) and "keras.Input(shape=(H, W, C))" in str(raised.value)
    assert not (tmp_path / "run").exists()


def test_gelu_exact_against_tanh(tmp_path):
    pair = checked(tmp_path, keras_model('y = layers.Dense(8, name="fc")(y)', 'y = layers.Activation("gelu", '
                                         'name="act")(y)', 'y = layers.Dense(2, name="out")(y)', shape=(6,)),
                   torch_model({"fc": "nn.Linear(6, 8)", "act": 'nn.GELU(approximate="tanh")',
                                "out": "nn.Linear(8, 2)"}), shape=(2, 6))
    assert_trap(pair, "gelu_approximation", "act", "act")


def test_layernorm_epsilon(tmp_path):
    pair = checked(tmp_path, keras_model('y = layers.Dense(8, name="fc")(y)',
                                         'y = layers.LayerNormalization(name="norm")(y)', shape=(6,)),
                   torch_model({"fc": "nn.Linear(6, 8)", "norm": "nn.LayerNorm(8)"}), shape=(2, 6))
    assert_trap(pair, "layernorm_epsilon", "norm", "norm")


def test_average_pooling_counting_the_padding(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.AveragePooling2D(3, strides=1, padding="same", '
                                                 'name="pool")(y)'),
                   torch_model({**CONV_T, "pool": "nn.AvgPool2d(3, 1, padding=1)"}))
    assert_trap(pair, "avg_pool_counts_padding", "pool", "pool")


def test_upsampling_align_corners(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.UpSampling2D(2, interpolation="bilinear", '
                                                 'name="up")(y)'),
                   torch_model({**CONV_T, "up": 'nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)'}))
    assert_trap(pair, "resize_align_corners", "up", "up")


MC_DROPOUT = """class AlwaysDropout(layers.Dropout):  # Monte Carlo dropout: active in inference too
    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


"""


def test_dropout_left_in_training_mode(tmp_path):
    pair = checked(tmp_path, MC_DROPOUT + keras_model(CONV_K, 'y = AlwaysDropout(0.5, name="drop")(y)'),
                   torch_model({**CONV_T, "drop": "nn.Dropout(0.5)"}))
    assert_trap(pair, "left_in_training_mode", "drop", "drop")


def test_batchnorm_without_running_statistics_is_left_in_training_mode(tmp_path):
    pair = checked(tmp_path, keras_model(CONV_K, 'y = layers.BatchNormalization(epsilon=1e-5, momentum=0.9, '
                                                 'name="bn")(y)'),
                   torch_model({**CONV_T, "bn": "nn.BatchNorm2d(4, track_running_stats=False)"}))
    assert_trap(pair, "left_in_training_mode", "bn", "bn")


def test_a_bias_on_one_side_only_stops_the_check_or_is_zeroed(tmp_path):
    keras = keras_model(CONV_K, "y = layers.Flatten()(y)", 'y = layers.Dense(3, name="fc")(y)')
    torch = torch_model({"conv": "nn.Conv2d(3, 4, 3, padding=1, bias=False)", "flat": "nn.Flatten()",
                         "fc": "nn.Linear(256, 3)"})
    with pytest.raises(UserError, match="a bias on one side only: Keras 'conv' and PyTorch 'conv'") as raised:
        checked(tmp_path, keras, torch)
    assert "--zero-unmatched-bias" in str(raised.value) and not (tmp_path / "run").exists()
    pair = checked(tmp_path, keras, torch, zero_unmatched_bias=True)
    assert pair["verdict"] == "equal", pair["sentence"]
    assert "conv / conv: Keras bias set to zero" in pair["handled"]


def test_a_difference_no_trap_explains_still_names_the_layer_and_its_numbers(tmp_path):
    pair = checked(tmp_path, keras_model('y = layers.Dense(5, name="fc1")(y)', 'y = layers.Dense(3, name="fc2")(y)',
                                         shape=(6,)),
                   torch_model({"fc1": "nn.Linear(6, 5)", "fc2": "nn.Linear(5, 3)"}, "self.fc2(self.fc1(x) + 1.0)"),
                   shape=(2, 6))
    first = pair["first_difference"]
    assert (first["stage"], first["keras"], first["torch"], first["traps"]) == ("forward", "fc2", "fc2", [])
    assert first["float64"]["rel"] > 1e-3 and first["float32"]["abs"] > 1e-3
    assert "fc2" in pair["sentence"] and "float64" in pair["sentence"]


# ---- bad input: one line, naming what and where; nothing written ---------------------------------------------

SMALL_K = keras_model('y = layers.Dense(3, name="fc")(y)', shape=(6,))
SMALL_T = torch_model({"fc": "nn.Linear(6, 3)"})


def refused(tmp_path: Path, keras: str, torch: str, shape=(2, 6), **settings) -> str:
    keras_file, torch_file = files(tmp_path, keras, torch)
    with pytest.raises(UserError) as raised:
        check_pair(keras_file, torch_file, shape, out=tmp_path / "run", in_process=True, **settings)
    assert "\n" not in str(raised.value) and raised.value.exit_status == 2
    assert not (tmp_path / "run").exists(), "a refused pair left files behind"
    return str(raised.value)


def test_a_missing_file_and_an_undefined_factory_are_refused_before_any_work(tmp_path):
    keras, torch = files(tmp_path, SMALL_K, SMALL_T)
    with pytest.raises(UserError, match=r"nowhere\.py: no such file \(the PyTorch file --pair names\)"):
        check_pair(keras, str(tmp_path / "nowhere.py:Net"), (2, 6), out=tmp_path / "run")
    with pytest.raises(UserError, match=r"k\.py: defines no 'make' \(the Keras factory --pair names\); it defines "
                                        r"build"):
        check_pair(keras.replace(":build", ":make"), torch, (2, 6), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_factory_that_raises(tmp_path):
    line = refused(tmp_path, SMALL_K, SMALL_T.replace("super().__init__()", "super().__init__()\n        "
                                                                             "raise ValueError('no weights here')"))
    assert "t.py:Net: the factory raised ValueError: no weights here" in line


def test_models_with_different_parameter_counts(tmp_path):
    line = refused(tmp_path, SMALL_K, torch_model({"fc": "nn.Linear(6, 3)", "extra": "nn.Linear(3, 3)"}))
    assert line.startswith("different parameter counts: Keras k.py:build has 21 parameters, PyTorch t.py:Net 33")
    assert "PyTorch extra (linear" in line


def test_an_input_shape_a_model_refuses(tmp_path):
    line = refused(tmp_path, SMALL_K, SMALL_T, shape=(2, 7))
    assert line.startswith("--input-shape 2,7: the PyTorch model t.py:Net refuses it (RuntimeError: mat1 and mat2 "
                           "shapes cannot be multiplied")


def test_a_mapping_file_naming_a_layer_that_does_not_exist(tmp_path):
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({"fc": "head"}))
    line = refused(tmp_path, SMALL_K, SMALL_T, mapping=pins)
    assert line == (f"{pins}: names PyTorch layer 'head', which t.py:Net does not have among its layers with "
                    "weights (fc)")


# ---- the losses, and the layouts' round trips ---------------------------------------------------------------

@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_a_loss_against_your_target(tmp_path, loss):
    target = tmp_path / "target.npy"
    rng = np.random.default_rng(2)
    np.save(target, rng.integers(0, 4, (2, 8, 8)) if loss == "ce" else rng.random((2, 4, 8, 8)))
    pair = checked(tmp_path, keras_model(CONV_K), torch_model(CONV_T), loss=loss, target=target)
    assert pair["verdict"] == "equal", pair["sentence"]


@pytest.mark.parametrize("kind, arrays, config", [
    ("conv3d", {"kernel": (2, 3, 3, 4, 5), "bias": (5,)}, {}),
    ("conv_transpose1d", {"kernel": (3, 5, 4)}, {}),
    ("depthwise_conv2d", {"kernel": (3, 3, 4, 2), "bias": (8,)}, {}),
    ("linear", {"kernel": (2 * 3 * 4, 5), "bias": (5,)}, {"flatten_from": [2, 3, 4]}),
    ("batch_norm", {"gamma": (3,), "beta": (3,), "moving_mean": (3,), "moving_variance": (3,)}, {}),
    ("mha", {"query/kernel": (8, 2, 4), "query/bias": (2, 4), "key/kernel": (8, 2, 4), "key/bias": (2, 4),
             "value/kernel": (8, 2, 4), "value/bias": (2, 4), "attention_output/kernel": (2, 4, 8),
             "attention_output/bias": (8,)}, {}),
])
def test_each_layout_goes_to_the_canonical_one_and_back(kind, arrays, config):
    rng = np.random.default_rng(3)
    keras = {name: rng.standard_normal(shape) for name, shape in arrays.items()}
    canonical = to_canonical(kind, keras, config)
    back = from_canonical(kind, canonical, config, {name: value.shape for name, value in keras.items()})
    assert set(back) == set(keras) and all(np.array_equal(back[name], keras[name]) for name in keras)
    if kind == "mha":
        assert canonical["in_proj_weight"].shape == (24, 8) and canonical["out_proj.weight"].shape == (8, 8)
        assert np.array_equal(canonical["in_proj_weight"][8:16], keras["key/kernel"].reshape(8, 8).T)
