"""The Keras arms' training (keras-tf, keras-jax, keras-torch): the portable models of keras_models/ trained as a
Keras 3 user trains them, with model.compile and model.fit, on whichever engine KERAS_BACKEND chose.

What differs between the engines is written once per engine, in identically named modules (backend/tensorflow.py,
backend/jax.py, backend/torch.py), and keras_fit/backend/__init__.py imports the one KERAS_BACKEND chose, as Keras
does for its own backends: a keras-jax process never loads TensorFlow, nor a keras-tf one PyTorch."""
import keras_models  # noqa: F401 - Keras imported once, quietly, by the portable package
