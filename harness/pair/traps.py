"""The known porting traps between Keras and PyTorch (--pair), each a detector and a one-line fix: when the first
real difference sits where a trap lives (its layers' settings say so), the report names it in words with its fix.
A difference no trap explains is still named, with its layer and numbers (harness/pair/report.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from shared.pair_layouts import family


@dataclass
class Context:
    """Where the first difference sits: its stage and row, and both layers' descriptions (kind, settings)."""

    stage: str
    row: dict
    keras: dict = field(default_factory=dict)  # the Keras unit: {"kind", "config", ...}
    torch: dict = field(default_factory=dict)
    layout: str = "channels_last"  # how the Keras model takes its input

    def kinds(self) -> set[str]:
        return {family(self.row.get("keras_kind") or self.keras.get("kind", "")),
                family(self.row.get("kind") or self.torch.get("kind", ""))}

    def k(self, key: str, default=None):
        return self.keras.get("config", {}).get(key, default)

    def t(self, key: str, default=None):
        return self.torch.get("config", {}).get(key, default)


@dataclass(frozen=True)
class Trap:
    name: str
    title: str
    applies: Callable[[Context], bool]
    fix: Callable[[Context], str]


def _pair(value, n: int = 2) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _shown(value) -> str:
    """A setting as Python writes it: (2, 2), not JSON's [2, 2]."""
    return str(tuple(value)) if isinstance(value, list) else repr(value)


def _same_pads(c: Context) -> list[tuple[int, int]]:
    """TensorFlow's 'same' padding per spatial axis of the layer's input: (before, after); the extra one after."""
    sizes = (c.row.get("input_shape") or c.row.get("shape") or [0, 0, 0])[1:]
    n = len(sizes)
    kernel = _pair(c.k("kernel_size", c.k("pool_size", 1)), n)
    strides = _pair(c.k("strides", 1) or 1, n)
    dilation = _pair(c.k("dilation_rate", 1), n)
    pads = []
    for size, k, s, d in zip(sizes, kernel, strides, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def _same_stride(c: Context) -> bool:
    padding = c.t("padding", 0)
    return (c.stage == "forward" and c.kinds() <= {"conv", "max_pool", "avg_pool"} and c.k("padding") == "same"
            and max(_pair(c.k("strides", 1) or 1)) > 1 and not isinstance(padding, str)
            and any(b != a or b != p for (b, a), p in zip(_same_pads(c), _pair(padding, 3))))


def _same_fix(c: Context) -> str:
    pads = _same_pads(c)
    (hb, ha), (wb, wa) = (pads + [(0, 0), (0, 0)])[:2]
    return (f"TensorFlow's padding='same' with strides={_shown(c.k('strides'))} pads {_shown(pads)} (before, after) "
            f"here, PyTorch's padding={_shown(c.t('padding'))} the same on both sides: pad explicitly, "
            f"nn.ZeroPad2d(({wb}, {wa}, {hb}, {ha})) then padding=0 in PyTorch, or keras.layers.ZeroPadding2D("
            f"{_shown(c.t('padding'))}) then padding='valid' in Keras")


def _stride(c: Context) -> bool:
    return (c.stage == "forward" and bool(c.kinds() & {"conv", "conv_transpose", "max_pool", "avg_pool"})
            and c.k("strides") is not None and c.t("stride") is not None
            and _pair(c.k("strides"), 3)[:2] != _pair(c.t("stride"), 3)[:2])


def _transposed(c: Context) -> bool:
    return c.stage == "forward" and c.kinds() == {"conv_transpose"} and _transposed_crops(c) is not None


def _transposed_crops(c: Context) -> tuple | None:
    """Keras' crop (before, after) of the full transposed convolution, against PyTorch's (padding, padding -
    output_padding) on the first spatial axis; None when they agree."""
    k, s = _pair(c.k("kernel_size", 1))[0], _pair(c.k("strides", 1))[0]
    total = max(k - s, 0) if c.k("padding") == "same" else 0
    keras = (total // 2, total - total // 2)
    padding, output_padding = _pair(c.t("padding", 0))[0], _pair(c.t("output_padding", 0))[0]
    keras_extra = _pair(c.k("output_padding") or 0)[0]
    torch = (padding, padding - output_padding)
    return None if (keras[0], keras[1] - keras_extra) == torch else (keras, torch)


def _transposed_fix(c: Context) -> str:
    keras, (p, after) = _transposed_crops(c)
    return (f"Keras' padding='{c.k('padding')}' crops {keras[0]} before and {keras[1]} after, PyTorch's "
            f"padding={_shown(c.t('padding'))}, output_padding={_shown(c.t('output_padding'))} crops {p} and "
            f"{after}: in Keras use "
            f"padding='valid' then keras.layers.Cropping2D((({p}, {after}), ({p}, {after}))), or in PyTorch "
            f"padding={keras[0]}, output_padding=0 where the two crops are equal (kernel - stride even)")


def _channels_first_fed(c: Context) -> bool:
    return c.stage in ("forward", "mapping") and c.layout == "channels_first" and c.k("data_format") == "channels_last"


def _channels_fix(c: Context) -> str:
    return ("the Keras model takes its input channels first (as PyTorch's) while its layers are channels_last, so "
            "they read the last axis as channels: declare keras.Input(shape=(H, W, C)) (twinnets then feeds it "
            "channels-last), or give its layers data_format='channels_first'")


def _gelu(c: Context) -> bool:
    approximate = c.t("approximate")
    keras = c.k("approximate")
    return (c.stage == "forward" and "gelu" in c.kinds() and approximate is not None
            and (keras is None or keras != (approximate == "tanh")))


def _epsilon(kind: str) -> Callable[[Context], bool]:
    return lambda c: (c.stage in ("forward", "gradient") and c.kinds() == {kind}
                      and c.k("epsilon") is not None and c.t("eps") is not None
                      and not math.isclose(c.k("epsilon"), c.t("eps"), rel_tol=1e-9))


def _momentum(c: Context) -> bool:
    momentum = c.t("momentum")
    return (c.stage in ("step", "drift") and c.kinds() == {"batch_norm"} and c.row.get("role") in
            ("running_mean", "running_var") and c.k("momentum") is not None
            and (momentum is None or not math.isclose(c.k("momentum"), 1 - momentum, abs_tol=1e-9)))


def _unbiased(c: Context) -> bool:
    return (c.stage in ("step", "drift") and c.kinds() == {"batch_norm"} and c.row.get("role") == "running_var"
            and not _momentum(c))


def _avg_pool(c: Context) -> bool:
    return (c.stage == "forward" and c.kinds() == {"avg_pool"} and c.t("count_include_pad", False)
            and any(_pair(c.t("padding", 0))))


def _resize(c: Context) -> bool:
    mode = str(c.t("mode", "nearest"))
    interpolation = str(c.k("interpolation", "nearest"))
    return c.stage == "forward" and bool(c.kinds() & {"upsample", "resize"}) and (
        bool(c.t("align_corners")) or bool(c.k("antialias")) or mode.removeprefix("bi") != interpolation.removeprefix(
            "bi"))


def _training(c: Context) -> bool:
    return c.stage == "forward" and any((c.row.get("behaviour") or {}).values())


def _flatten(c: Context) -> bool:
    return c.stage == "forward" and ("flatten" in c.kinds() or (
        "linear" in c.kinds() and (bool(c.k("flatten_from")) or any(b["kind"] == "flatten" for b in
                                                                     c.row.get("between", [])))))


TRAPS = (
    Trap("batchnorm_epsilon", "BatchNorm epsilon: Keras' default is 1e-3, PyTorch's 1e-5", _epsilon("batch_norm"),
         lambda c: f"set one epsilon on both sides: keras.layers.BatchNormalization(epsilon={c.t('eps'):g}) for "
                   f"PyTorch's eps={c.t('eps'):g} (Keras has {c.k('epsilon'):g})"),
    Trap("batchnorm_momentum", "BatchNorm momentum: Keras' weighs the old running statistics, PyTorch's the batch's",
         _momentum, lambda c: f"Keras momentum = 1 - PyTorch momentum: keras.layers.BatchNormalization(momentum="
                              f"{1 - (c.t('momentum') or 0.0):g}) for nn.BatchNorm(momentum={c.t('momentum')}) "
                              f"(Keras has {c.k('momentum'):g})"),
    Trap("batchnorm_running_variance", "BatchNorm running variance: Keras keeps the batch's biased variance, PyTorch "
                                       "the unbiased one (n / (n - 1) larger)", _unbiased,
         lambda c: "no setting changes it: subclass keras.layers.BatchNormalization to update moving_variance with "
                   "variance * n / (n - 1), as keras_models/unet.py's BatchNorm does, or expect evaluation after "
                   "training to differ by it"),
    Trap("flatten_order", "Flatten before Dense: Keras on channels-last input flattens (H, W, C), PyTorch (C, H, W)",
         _flatten, lambda c: "twinnets maps the Dense's rows to PyTorch's (C, H, W) order, so PyTorch must flatten its "
                             "NCHW tensor as it is (no permute to channels-last before nn.Flatten or x.flatten(1)); "
                             "or put keras.layers.Permute((3, 1, 2)) before Keras' Flatten"),
    Trap("same_padding_stride", "padding='same' with a stride: TensorFlow pads asymmetrically (the extra row and "
                                "column after), PyTorch's padding=p symmetrically", _same_stride, _same_fix),
    Trap("stride_differs", "the stride differs: one side strides this layer, the other another one", _stride,
         lambda c: f"Keras has strides={tuple(_pair(c.k('strides')))}, PyTorch stride={tuple(_pair(c.t('stride')))}: "
                   "stride the same layer on both sides (a ResNet v1 strides a block's first 1x1 convolution, v1.5 "
                   "and torchvision its 3x3)"),
    Trap("transposed_conv_padding", "transposed convolution: Keras' padding='same' crops otherwise than PyTorch's "
                                    "padding and output_padding", _transposed, _transposed_fix),
    Trap("channels_last_fed_channels_first", "channels-last layers fed a channels-first input", _channels_first_fed,
         _channels_fix),
    Trap("gelu_approximation", "GELU: the exact erf form against the tanh approximation", _gelu,
         lambda c: f"PyTorch has nn.GELU(approximate='{c.t('approximate')}'), Keras gelu(approximate="
                   f"{c.k('approximate')}): use one form on both sides, nn.GELU(approximate='"
                   f"{'tanh' if c.k('approximate') else 'none'}') or keras.activations.gelu(x, approximate="
                   f"{c.t('approximate') == 'tanh'})"),
    Trap("layernorm_epsilon", "LayerNorm epsilon: Keras' default is 1e-3, PyTorch's 1e-5", _epsilon("layer_norm"),
         lambda c: f"set one epsilon on both sides: keras.layers.LayerNormalization(epsilon={c.t('eps'):g}) for "
                   f"PyTorch's eps={c.t('eps'):g} (Keras has {c.k('epsilon'):g})"),
    Trap("avg_pool_counts_padding", "average pooling: PyTorch counts the zero padding in the average, Keras does not",
         _avg_pool, lambda c: "nn.AvgPool2d(..., count_include_pad=False) averages over the input values only, as "
                              "Keras and TensorFlow do"),
    Trap("resize_align_corners", "resize/upsample: align_corners, antialias or the interpolation differ", _resize,
         lambda c: f"PyTorch has mode={c.t('mode')!r}, align_corners={c.t('align_corners')}; Keras interpolation="
                   f"{c.k('interpolation')!r}, antialias={c.k('antialias')}: Keras and TensorFlow resize with "
                   "half-pixel centres, so align_corners=False in PyTorch, the same interpolation on both sides, and "
                   "antialias on both (F.interpolate(..., antialias=True)) or neither"),
    Trap("left_in_training_mode", "dropout or BatchNorm left in training mode", _training,
         lambda c: "; ".join(f"{'Keras' if side == 'tf' else 'PyTorch'} {text}" for side, text in
                             c.row["behaviour"].items() if text) + ": call the Keras layer without training=True, "
                             "keep track_running_stats=True and use F.dropout(x, p, training=self.training) in "
                             "PyTorch; twinnets compares both in inference mode (training=False, model.eval())"),
)
# Named where the weights are mapped (harness/pair/mapping.py), not at a difference: they stop the check or are
# handled by it.
BIAS_TRAP = ("bias_one_side", "a bias on one side only", "--zero-unmatched-bias sets it to zero (the same network), "
             "or give both sides a bias (use_bias in Keras, bias= in PyTorch)")


def traps_at(first: dict | None, keras_units: dict[str, dict], torch_units: dict[str, dict],
             layout: str) -> list[dict]:
    """Every trap whose detector fires where the first difference sits, with its fix."""
    if first is None:
        return []
    context = Context(first["stage"], first, keras_units.get(first.get("keras"), {}),
                      torch_units.get(first.get("torch"), {}), layout)
    found = []
    for trap in TRAPS:
        try:
            if trap.applies(context):
                found.append({"name": trap.name, "title": trap.title, "fix": trap.fix(context)})
        except (TypeError, ValueError, KeyError, IndexError):  # a setting of an unexpected form: not this trap
            continue
    return found


def mapping_hint(keras: dict | None, torch: dict | None, layout: str) -> str:
    """A trap's words for a layer that could not be mapped: channels-last layers fed channels-first input give
    kernels for another channel count."""
    if keras and _channels_first_fed(Context("mapping", {}, keras, torch or {}, layout)):
        trap = next(t for t in TRAPS if t.name == "channels_last_fed_channels_first")
        return f" ({trap.title}: {trap.fix(Context('mapping', {}, keras, torch or {}, layout))})"
    return ""
