"""Datasets as numpy arrays in the canonical layout: images NHWC float32 in [0, 1], labels int64, masks HxW float32."""
