"""The shared-library dependencies (DT_NEEDED) of an ELF file, read with the standard library alone.

setup.py uses it to refuse a build that carries its own copy of libstdc++: such a library (seen once on a GPU
machine whose linker found only libstdc++.a) works until it formats a number into an error message, where its
private std::locale meets the process's shared one and the process ends with SIGSEGV instead of raising.
"""
import struct
from typing import List

_DT_NEEDED, _DT_STRTAB, _SHT_DYNAMIC = 1, 5, 6


def needed_libraries(path: str) -> List[str]:
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise ValueError(f"{path}: not a little-endian 64-bit ELF file")
        f.seek(0x28)
        (shoff,) = struct.unpack("<Q", f.read(8))
        f.seek(0x3A)
        shentsize, shnum = struct.unpack("<HH", f.read(4))
        sections = []
        for i in range(shnum):
            f.seek(shoff + i * shentsize)
            _, sh_type, _, addr, offset, size, link = struct.unpack("<IIQQQQI", f.read(44))
            sections.append((sh_type, addr, offset, size, link))
        out = []
        for sh_type, _, offset, size, link in sections:
            if sh_type != _SHT_DYNAMIC:
                continue
            f.seek(offset)
            entries = [struct.unpack("<qQ", f.read(16)) for _ in range(size // 16)]
            strtab_offset = sections[link][2]
            for tag, value in entries:
                if tag == _DT_NEEDED:
                    f.seek(strtab_offset + value)
                    out.append(f.read(256).split(b"\0", 1)[0].decode())
        return out
