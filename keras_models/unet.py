"""The U-Net as portable Keras models (keras.layers and keras.ops: any Keras backend); twin of torch_impl/unet.py.

Two variants: padded, and Ronneberger's original with valid convolutions."""
from __future__ import annotations

import keras
from keras import ops

from shared.tasks import UNetSpec
from shared.weights import unet_widths

AXES = (0, 1, 2)  # N, H, W: a BatchNorm's statistics are per channel
# The backward by hand pays on TensorFlow and JAX. On PyTorch Keras runs it as an autograd.Function, which
# torch.compile recompiles for each layer's shape until it gives up (3x the compiled step); autodiff of the same
# forward is as fast there without compile (docs/profile.md).
BY_HAND = keras.backend.backend() != "torch"


def nested_mean(x):
    """Per-channel mean over N, H, W, one axis at a time, as PyTorch's reduction sums: one float32 sum over all
    N*H*W values (ops.moments, tf.nn.moments) loses ten times more (on 32,768 values a mean 3e-7 off, against 3e-8)."""
    return ops.mean(ops.mean(ops.mean(x, axis=2), axis=1), axis=0)


def _with_gradient(function, *args):
    """function(*args) returns its value and its gradient function: keras.ops.custom_gradient where BY_HAND, else
    the value alone, for the engine's autodiff."""
    return ops.custom_gradient(function)(*args) if BY_HAND else function(*args)[0]


def _moments(x, scope: str):
    """The per-channel mean and biased variance over N, H, W, stacked as (2, C): one output, as a custom gradient
    takes on every Keras engine. Two passes of nested means, as precise as PyTorch's; the gradient by hand, as PyTorch's
    batch_norm_backward takes it: d mean / dx = 1 / n and d variance / dx = 2 (x - mean) / n. Autodiff of the nested
    means would broadcast back axis by axis, a swarm of small ops (docs/profile.md)."""

    def moments(x):
        n = ops.cast(ops.size(x) // x.shape[-1], x.dtype)  # N*H*W; N is known only when the step runs
        mean = nested_mean(x)
        centered = x - mean

        def gradient(*args, upstream=None):  # the upstream gradient comes first on TensorFlow and JAX, named on PyTorch
            d_mean, d_variance = ops.unstack(args[0] if upstream is None else upstream)
            with keras.name_scope(scope):  # the backward runs outside the layer: named after it, as autodiff's is
                return centered * (2 * d_variance / n) + d_mean / n
        return ops.stack([mean, nested_mean(ops.square(centered))]), gradient

    return _with_gradient(moments, x)


def _normalize(x, mean, variance, gamma, beta, epsilon: float, scope: str):
    """gamma (x - mean) / sqrt(variance + epsilon) + beta, computed as PyTorch's kernel does, x * scale + (beta - mean *
    scale), with its partial derivatives by hand. With those of _moments, the chain rule gives PyTorch's closed
    form, dx = scale (dy - mean(dy) - x_hat mean(dy x_hat)); kept in two parts, so that a subclass may take the
    statistics elsewhere (tf_impl/distributed.py: over every replica's batch) and the gradient still holds."""

    def affine(x, mean, variance, gamma, beta):
        inverse_std = ops.rsqrt(variance + epsilon)
        scale = gamma * inverse_std

        def gradient(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            with keras.name_scope(scope):
                d_beta = ops.sum(dy, axis=AXES)
                d_gamma = ops.sum(dy * (x - mean), axis=AXES) * inverse_std  # sum(dy * x_hat)
                return dy * scale, -scale * d_beta, -0.5 * scale * inverse_std * d_gamma, d_gamma, d_beta
        return x * scale + (beta - mean * scale), gradient

    return _with_gradient(affine, x, mean, variance, gamma, beta)


class BatchNorm(keras.layers.BatchNormalization):
    """Keras' BatchNormalization with PyTorch's running statistics and precision: both normalise a training batch
    with its biased variance, but PyTorch stores the unbiased one, n / (n - 1) times larger, in running_var. The
    statistics are nested means, and the backward is written by hand (_moments, _normalize)."""

    def call(self, x, training: bool = False):
        if not training:
            return super().call(x, training=False)
        x32 = ops.cast(x, self.moving_mean.dtype)  # statistics in float32 under a mixed bf16/fp16 policy, as Keras does
        # Tensors, not the variables: TensorFlow's custom_gradient refuses a variable read inside it.
        gamma, beta = ops.cast(self.gamma, x32.dtype), ops.cast(self.beta, x32.dtype)
        y, mean, variance, n = self._normalize_batch(x32, gamma, beta)
        self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
        self.moving_variance.assign(self.momentum * self.moving_variance + (1 - self.momentum) * variance * n / (n - 1))
        return ops.cast(y, x.dtype)

    def _normalize_batch(self, x, gamma, beta) -> tuple:
        """The batch normalised with its own statistics, and those statistics with their count n (a separate method
        so that the TensorFlow side can run it on TensorFlow's own kernels: tf_impl/classifier.py)."""
        mean, variance, n = self._batch_moments(x)
        return _normalize(x, mean, variance, gamma, beta, self.epsilon, self.name), mean, variance, n

    def _batch_moments(self, x) -> tuple:
        """Per-channel mean and biased variance over N, H, W, and the count n they were taken over (a separate
        method so that tf_impl/distributed.py can take them over the global batch of all replicas)."""
        mean, variance = ops.unstack(_moments(x, self.name))
        return mean, variance, ops.cast(ops.size(x) // x.shape[-1], x.dtype)


def _batch_norm_layer(form: str, epsilon: float, momentum: float, name: str) -> keras.layers.BatchNormalization:
    """The spec's BatchNorm: twinnets' precise one, or Keras' own ("stock") as a Keras user writes it, given the
    twins' epsilon and momentum so that only the algorithm differs (the benchmark's stock row, docs/benchmark.md)."""
    layer = BatchNorm if form == "precise" else keras.layers.BatchNormalization
    return layer(epsilon=epsilon, momentum=momentum, name=name)


class DoubleConv(keras.layers.Layer):
    """(conv3x3 -> BatchNorm -> ReLU) twice; padding 'same' keeps the size, 'valid' loses 2 pixels per conv."""

    def __init__(self, n_out: int, padding: str, bn_eps: float, bn_momentum: float, batch_norm: str, name: str):
        super().__init__(name=name)
        # Keras' momentum weighs the old running statistics; PyTorch's weighs the new batch. The names join with "_"
        # (keras_models/weights.py reads it as the canonical "."): Keras on PyTorch keys torch parameters by them.
        # Kernels start at zero: the canonical weights are loaded next (a random initializer costs JAX a compile).
        self.conv1 = keras.layers.Conv2D(n_out, 3, padding=padding, name=f"{name}_conv1", kernel_initializer="zeros")
        self.bn1 = _batch_norm_layer(batch_norm, bn_eps, 1 - bn_momentum, f"{name}_bn1")
        self.conv2 = keras.layers.Conv2D(n_out, 3, padding=padding, name=f"{name}_conv2", kernel_initializer="zeros")
        self.bn2 = _batch_norm_layer(batch_norm, bn_eps, 1 - bn_momentum, f"{name}_bn2")

    def call(self, x, training: bool = False):
        x = ops.relu(self.bn1(self.conv1(x), training=training))
        return ops.relu(self.bn2(self.conv2(x), training=training))


def center_crop(skip, size):
    """The original U-Net crops the encoder's larger feature map to the decoder's (height, width) before
    concatenating; each axis on its own, as the input need not be square."""
    top = (skip.shape[1] - size[0]) // 2
    left = (skip.shape[2] - size[1]) // 2
    return skip[:, top:top + size[0], left:left + size[1], :]


class UNet(keras.Model):
    """Contracting path enc1..enc{depth+1} with 2x2 max-pooling, expanding path up{l} (2x2 transposed conv)
    + skip + dec{l}, and a 1x1 head to one logit per pixel."""

    def __init__(self, in_channels: int, base_filters: int, depth: int, padding: str, bn_eps: float,
                 bn_momentum: float, batch_norm: str, **kwargs):
        super().__init__(**{"name": "unet", **kwargs})
        # Keras sizes enc1 from the first input it sees (build); in_channels is kept to rebuild a saved model.
        self.arguments = {"in_channels": in_channels, "base_filters": base_filters, "depth": depth, "bn_eps": bn_eps,
                          "bn_momentum": bn_momentum, "batch_norm": batch_norm}
        widths = unet_widths(base_filters, depth)
        self.depth = depth
        for level, width in enumerate(widths, start=1):
            setattr(self, f"enc{level}", DoubleConv(width, padding, bn_eps, bn_momentum, batch_norm, f"enc{level}"))
        for level in range(depth, 0, -1):
            setattr(self, f"up{level}", keras.layers.Conv2DTranspose(widths[level - 1], 2, strides=2,
                                                                     name=f"up{level}", kernel_initializer="zeros"))
            setattr(self, f"dec{level}", DoubleConv(widths[level - 1], padding, bn_eps, bn_momentum, batch_norm,
                                                    f"dec{level}"))
        self.head = keras.layers.Conv2D(1, 1, name="head", kernel_initializer="zeros")
        self.pool = keras.layers.MaxPooling2D(2)

    def call(self, x, training: bool = False):
        skips = []
        for level in range(1, self.depth + 1):  # (N, H, W, C) -> ... halving H, W at each level
            x = getattr(self, f"enc{level}")(x, training=training)
            skips.append(x)
            x = self.pool(x)
        x = getattr(self, f"enc{self.depth + 1}")(x, training=training)  # the bottleneck
        for level in range(self.depth, 0, -1):  # doubling H, W back up
            x = getattr(self, f"up{level}")(x)
            skip = center_crop(skips[level - 1], x.shape[1:3])
            x = getattr(self, f"dec{level}")(ops.concatenate([skip, x], axis=-1), training=training)
        return self.head(x)  # (N, H_out, W_out, 1) logits

    def get_config(self) -> dict:
        """What keras.saving.load_model needs to rebuild the model from a .keras file."""
        return {"name": self.name, "trainable": self.trainable, **self.arguments}


@keras.saving.register_keras_serializable(package="twinnets")
class UNetOriginal(UNet):
    """Ronneberger et al. 2015: valid 3x3 convolutions, crop-and-concatenate skips; 572x572 in, 388x388 out."""

    def __init__(self, in_channels: int, base_filters: int, depth: int, bn_eps: float, bn_momentum: float,
                 batch_norm: str, **kwargs):
        super().__init__(in_channels, base_filters, depth, "valid", bn_eps, bn_momentum, batch_norm, **kwargs)


@keras.saving.register_keras_serializable(package="twinnets")
class UNetPadded(UNet):
    """The common variant: 'same' 3x3 convolutions, so the mask has the input's size and skips need no crop."""

    def __init__(self, in_channels: int, base_filters: int, depth: int, bn_eps: float, bn_momentum: float,
                 batch_norm: str, **kwargs):
        super().__init__(in_channels, base_filters, depth, "same", bn_eps, bn_momentum, batch_norm, **kwargs)


def build(spec: UNetSpec) -> UNet:
    """Keras creates the weights when it builds the model for an input shape (a symbolic call: nothing runs, which on
    JAX saves compiling every op once); the harness then loads the canonical weights."""
    variant = UNetPadded if spec.variant == "padded" else UNetOriginal
    model = variant(spec.in_channels, spec.base_filters, spec.depth, spec.bn_eps, spec.bn_momentum, spec.batch_norm)
    model(keras.Input((*spec.image_shape, spec.in_channels), batch_size=1))  # (1, H, W, C), symbolic
    return model
