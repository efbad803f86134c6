"""The built library itself: it must load the process's shared libstdc++, not carry a private copy (a copy made
bad-input errors end the process with SIGSEGV on a GPU machine once, when their messages formatted numbers)."""
import os
import sys

import pytest
import torch

import linattn
from linattn import _elf, _library

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF libraries on Linux only")


@linux
def test_needed_libraries_reads_torch_dependencies():
    c10 = os.path.join(os.path.dirname(torch.__file__), "lib", "libc10.so")
    needed = _elf.needed_libraries(c10)
    assert any(n.startswith("libstdc++.so") for n in needed), needed
    assert any(n.startswith("libc.so") for n in needed), needed


def test_needed_libraries_rejects_non_elf(tmp_path):
    path = tmp_path / "not_elf.so"
    path.write_bytes(b"#!/bin/sh\n" + os.urandom(64))
    with pytest.raises(ValueError, match="not a little-endian 64-bit ELF"):
        _elf.needed_libraries(str(path))


@linux
def test_library_loads_the_shared_libstdcxx_and_torch():
    needed = _elf.needed_libraries(_library.LIBRARY_PATH)
    assert any(n.startswith("libstdc++.so") for n in needed), f"libstdc++ linked statically? {needed}"
    assert "libc10.so" in needed and "libtorch_cpu.so" in needed, needed
    assert not any("torch_python" in n for n in needed), needed
    assert _elf.defined_dynamic_symbols(_library.LIBRARY_PATH, "_ZNSt6locale") == [], "a private std::locale"
    assert _elf.defined_dynamic_symbols(_library.LIBRARY_PATH, "_ZN7linattn"), "no linattn symbols found"


def test_error_messages_format_numbers():
    q = torch.randn(1, 9, 2, 5)
    with pytest.raises(RuntimeError, match=r"k must have the shape of q \[1, 9, 2, 5\]"):
        linattn.chunk_gla(q, torch.randn(1, 9, 2, 4), torch.randn(1, 9, 2, 3), torch.randn(1, 9, 2, 5).sigmoid().log())
