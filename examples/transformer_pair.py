"""A transformer encoder block: keras.layers.MultiHeadAttention, LayerNormalization and a Dense MLP, written as
PyTorch's nn.TransformerEncoderLayer computes (post-norm: x = norm1(x + attention(x)); x = norm2(x + mlp(x))).

    python compare.py --pair examples/transformer_pair.py:keras_encoder_block \
        examples/transformer_pair.py:torch_encoder_block --input-shape 2,6,16

Expected verdict: equal, up to rounding. The attention's weights are mapped between layouts: Keras keeps a query, a
key and a value kernel per head, (16, 4, 4) each, where PyTorch packs all three in one in_proj_weight (48, 16), and
the output kernel (4, 4, 16) is PyTorch's out_proj.weight (16, 16) transposed. The Keras layers are named as
PyTorch's modules (self_attn, norm1, linear1, ...), so the checker maps them by name.

The input is a batch of sequences, (N, L, E) = (2, 6, 16) on both sides (batch_first=True): there is no channel
axis to move. Each side's file is imported in its own framework's process: the factories import their framework
when called."""

D_MODEL, HEADS, FEEDFORWARD = 16, 4, 32


def keras_encoder_block():
    import keras
    from keras import layers

    x = keras.Input((None, D_MODEL))  # sequences of any length
    # key_dim is the width of one head: PyTorch splits d_model among its heads.
    attention = layers.MultiHeadAttention(HEADS, key_dim=D_MODEL // HEADS, name="self_attn")(x, x)
    # PyTorch's layer_norm_eps is 1e-5; Keras' LayerNormalization defaults to 1e-3.
    y = layers.LayerNormalization(epsilon=1e-5, name="norm1")(layers.Add()([x, attention]))
    hidden = layers.Dense(FEEDFORWARD, activation="relu", name="linear1")(y)  # PyTorch's default activation
    mlp = layers.Dense(D_MODEL, name="linear2")(hidden)
    y = layers.LayerNormalization(epsilon=1e-5, name="norm2")(layers.Add()([y, mlp]))
    return keras.Model(x, y)


def torch_encoder_block():
    from torch import nn

    # dropout=0.0: the Keras block has none (the checker runs both in inference mode, and switches dropout off for
    # its training steps, but a block with dropout would not be the same network).
    return nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=FEEDFORWARD, dropout=0.0, batch_first=True)
