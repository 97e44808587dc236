"""twinnets' own U-Net: the Keras model (keras_models/unet.py) against the PyTorch one (torch_impl/unet.py).

    python compare.py --pair examples/unet_pair.py:keras_unet examples/unet_pair.py:torch_unet \
        --input-shape 2,3,32,32 --lr 0.0001

Expected verdict: equal. They are twins by construction (same layers, same names, BatchNorm epsilon and momentum
matched), so every layer agrees to rounding in float32 and to about 1e-15 in float64.

The checker imports this file once in each side's process, the Keras one and the PyTorch one: each factory imports
its own framework when it is called, so the Keras process never loads torch and the PyTorch process never loads
Keras. Two files, one per framework, work the same way (examples/README.md)."""
from shared.tasks import UNetSpec

# The padded U-Net at a size that checks in seconds: 32x32 pixels (its four 2x2 poolings need multiples of 16) and 4
# filters at the first level, 122,461 parameters. The rest (depth 4, BatchNorm epsilon 1e-5) are the task's defaults.
SPEC = UNetSpec(image_size=32, base_filters=4)


def keras_unet():
    from keras_models.unet import build

    return build(SPEC)  # built for (32, 32, 3) channels-last images: the checker feeds it the input moved to NHWC


def torch_unet():
    from torch_impl.unet import build

    return build(SPEC)
