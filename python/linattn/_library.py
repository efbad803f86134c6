"""Loads liblinattn.so, which registers the torch.ops.linattn operators with the dispatcher."""
import os

import torch

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
LIBRARY_PATH = os.path.join(PACKAGE_DIR, "lib", "liblinattn.so")

if not os.path.exists(LIBRARY_PATH):
    raise ImportError(
        f"linattn: {LIBRARY_PATH} is missing; install the package with "
        "`pip install --no-build-isolation .` (or build in place with `python setup.py build_ext --inplace`)"
    )
torch.ops.load_library(LIBRARY_PATH)


def has_cuda_kernels() -> bool:
    """True when the loaded library was built with its CUDA kernels."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("linattn::chunk_gla", "CUDA")
