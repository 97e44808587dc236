"""Runs one task on one side through that side's surface (harness/surface.py): lessons.py for neuron and autograd,
digits.py for mlp and cnn, unet.py for the U-Net. The side's surface is handed in, so no file here imports a
framework; harness/registry.py says which runner a task uses."""
