import os
import zlib

import pytest
import torch

import linattn  # noqa: F401  (loads the ops)

CUDA = torch.cuda.is_available() and linattn.has_cuda_kernels()


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # A different seed per test (fresh random inputs), reproducible from the test id when one fails.
    seed = (zlib.crc32(request.node.nodeid.encode()) ^ int(os.environ.get("LINATTN_TEST_SEED", "0"))) % (2**31)
    torch.manual_seed(seed)
    yield


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device and linattn built with CUDA kernels")
    for item in items:
        if "cuda" in item.keywords and not CUDA:
            item.add_marker(skip_cuda)
