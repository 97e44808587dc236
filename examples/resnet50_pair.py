"""Keras' ResNet50 (keras.applications) against torchvision's resnet50, both with random weights.

    python compare.py --pair examples/resnet50_pair.py:keras_resnet50 examples/resnet50_pair.py:torch_resnet50 \
        --input-shape 2,3,64,64 --lr 0.0001 --zero-unmatched-bias

Expected verdict: different, for a reason in the architecture. The two are not the same network, in two ways:

1. Keras' 53 convolutions carry a bias, torchvision's none (each feeds a BatchNorm, which would absorb it). Without
   --zero-unmatched-bias the check stops there, naming conv1_conv / conv1; with it, the Keras biases are set to zero
   and the two agree up to the next difference.
2. In the first block of stages 3 to 5, Keras strides the first 1x1 convolution (the original ResNet), torchvision
   the 3x3 one ("ResNet v1.5"). The stem and the first stage agree; the first difference is the first block that
   downsamples, Keras' conv3_block1 against PyTorch's layer2.0, at its first convolution, whose output is half as
   large on the Keras side: (2, 128, 8, 8) against (2, 128, 16, 16).

The checker imports this file in each side's process: each factory imports its own framework when it is called."""

# Keras builds the model for a fixed image size, stated here channels-last as Keras takes images; --input-shape
# 2,3,64,64 is the same batch in PyTorch's layout. 64x64 keeps the check short; any size from 32 up goes through both.
IMAGE_SIZE = 64


def keras_resnet50():
    import keras

    # The 1000-class head on both sides; classifier_activation=None returns logits, as torchvision's fc does (Keras'
    # default ends in a softmax, which would differ at the last layer for no porting reason).
    return keras.applications.ResNet50(weights=None, input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                       classifier_activation=None)


def torch_resnet50():
    from functools import partial

    from torch import nn
    from torchvision.models import resnet50

    # Keras' ResNet50 builds its BatchNormalization layers with epsilon 1.001e-5 and momentum 0.99; torchvision's
    # defaults are 1e-5 and 0.1 (PyTorch's momentum weighs the new batch: Keras' 0.99 is PyTorch's 0.01). The
    # epsilon alone moves every output by about 5e-9 relative, which float64 tells from rounding: left at 1e-5, the
    # checker stops at the very first BatchNorm (torch_resnet50_defaults below). Matched here, so that what remains
    # is the architecture.
    return resnet50(weights=None, norm_layer=partial(nn.BatchNorm2d, eps=1.001e-5, momentum=0.01))


def torch_resnet50_defaults():
    """torchvision's resnet50 as it comes, BatchNorm epsilon 1e-5: the first difference is then the first BatchNorm
    (conv1_bn / bn1), and the checker names the epsilon."""
    from torchvision.models import resnet50

    return resnet50(weights=None)
