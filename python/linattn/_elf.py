"""What an ELF shared library depends on and defines (DT_NEEDED, dynamic symbols), read with the standard
library alone. setup.py and tests/python/test_library.py use it to refuse a linattn library that carries its
own libstdc++: one linked that way on a GPU machine (its linker found only libstdc++.a) broke whenever it
formatted a number into an error message, its private std::locale meeting the process's shared one (the
process crashed there; relinked here, messages were cut short at the first number).
"""
import struct
from typing import List

_DT_NEEDED, _SHT_DYNAMIC, _SHT_DYNSYM = 1, 6, 11


def _sections(f, path):
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
        _, sh_type, _, _, offset, size, link = struct.unpack("<IIQQQQI", f.read(44))
        sections.append((sh_type, offset, size, link))
    return sections


def _string(f, offset):
    f.seek(offset)
    return f.read(512).split(b"\0", 1)[0].decode()


def defined_dynamic_symbols(path: str, prefix: str = "") -> List[str]:
    """Names of the symbols the file defines in its dynamic symbol table that start with `prefix`."""
    with open(path, "rb") as f:
        sections = _sections(f, path)
        out = []
        for sh_type, offset, size, link in sections:
            if sh_type != _SHT_DYNSYM:
                continue
            strtab = sections[link][1]
            f.seek(offset)
            table = f.read(size)
            for i in range(size // 24):
                st_name, _, _, st_shndx = struct.unpack_from("<IBBH", table, 24 * i)
                if st_shndx != 0 and st_name != 0:
                    name = _string(f, strtab + st_name)
                    if name.startswith(prefix):
                        out.append(name)
        return out


def needed_libraries(path: str) -> List[str]:
    """The DT_NEEDED entries of the file, in order."""
    with open(path, "rb") as f:
        sections = _sections(f, path)
        out = []
        for sh_type, offset, size, link in sections:
            if sh_type != _SHT_DYNAMIC:
                continue
            f.seek(offset)
            entries = [struct.unpack("<qQ", f.read(16)) for _ in range(size // 16)]
            strtab = sections[link][1]
            out += [_string(f, strtab + value) for tag, value in entries if tag == _DT_NEEDED]
        return out
