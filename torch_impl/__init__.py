"""The PyTorch side of twinnets (dynamic graphs, eager autograd); twin of tf_impl."""
# torch.optim loads torch._dynamo, which loads triton; triton's LLVM crashes the process when TensorFlow's
# was loaded first. Loading it here, and importing torch_impl before tf_impl wherever both sides share a
# process (tests, --in-process), keeps them apart.
import torch._dynamo  # noqa: F401
