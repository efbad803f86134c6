"""Builds liblinattn.so (ops registered with the PyTorch dispatcher) into the linattn package.

The library is a plain shared object, not a Python module: Python loads it with
torch.ops.load_library and LibTorch programs link it through the CMake config
shipped beside it, so it must not depend on libtorch_python (py_limited_api).

Environment:
  LINATTN_CUDA=0/1          force the CPU-only or the CUDA build (default: CUDA when torch has CUDA
                            and nvcc is found)
  LINATTN_CUDA_ARCHS="80;90a"  CUDA architectures (default sm_80 and sm_90a)
  MAX_JOBS                  parallel compile jobs (read by torch's ninja build)
"""
import glob
import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup
from torch.utils import cpp_extension
import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
LIB_NAME = "liblinattn.so"


def want_cuda():
    flag = os.environ.get("LINATTN_CUDA")
    if flag is not None:
        return flag == "1"
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _elf_module():
    spec = importlib.util.spec_from_file_location("_linattn_elf", os.path.join(ROOT, "python", "linattn", "_elf.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shared_libstdcxx():
    """The libstdc++.so.6 this process (and so torch) runs on, or None. Naming it on the link line makes the
    library depend on it even where the linker would otherwise find only libstdc++.a and copy it in."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if os.path.basename(path).startswith("libstdc++.so") and os.path.exists(path):
                    return path
    except OSError:
        pass
    return None


def check_links_shared_libstdcxx(lib_path):
    if not sys.platform.startswith("linux") or not os.path.exists(lib_path):
        return
    elf = _elf_module()
    needed = elf.needed_libraries(lib_path)
    private = elf.defined_dynamic_symbols(lib_path, "_ZNSt6locale")  # std::locale is libstdc++'s own
    if not any(n.startswith("libstdc++.so") for n in needed) or private:
        raise RuntimeError(
            f"{lib_path} carries its own libstdc++ (dependencies: {needed}; std::locale symbols defined: "
            f"{len(private)}): the linker copied "
            "libstdc++.a into it, and such a library breaks (messages cut short, or SIGSEGV) when it formats a "
            "number into an error message next to torch's own libstdc++. Install the shared libstdc++ link "
            "(e.g. the libstdc++-<version>-dev package of your g++) or unset flags such as -static-libstdc++.")


def cuda_arch_flags():
    archs = os.environ.get("LINATTN_CUDA_ARCHS", "80;90a")
    flags = []
    for arch in filter(None, archs.replace(",", ";").split(";")):
        arch = arch.strip().replace("sm_", "")
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    return flags


def sources(cuda):
    rel = lambda p: os.path.relpath(p, ROOT)
    cpp = sorted(glob.glob(os.path.join(ROOT, "csrc", "core", "*.cpp")))
    cpp += sorted(glob.glob(os.path.join(ROOT, "ops", "*", "*.cpp")))
    cpp = [p for p in cpp if cuda or not p.endswith("_cuda.cpp")]
    cu = sorted(glob.glob(os.path.join(ROOT, "ops", "*", "cuda", "**", "*.cu"), recursive=True)) if cuda else []
    return [rel(p) for p in cpp + cu]


class BuildExt(cpp_extension.BuildExtension):
    """Names the library liblinattn.so and ships headers and the CMake config next to it."""

    def get_ext_filename(self, ext_name):
        parts = ext_name.split(".")
        if parts[-1] == "liblinattn":  # called with the full dotted name and with its last part alone
            return os.path.join(*parts[:-1], LIB_NAME)
        return super().get_ext_filename(ext_name)

    def run(self):
        if self.inplace:
            os.makedirs(os.path.join(ROOT, "python", "linattn", "lib"), exist_ok=True)
        super().run()
        for ext in self.extensions:
            check_links_shared_libstdcxx(self.get_ext_fullpath(ext.name))
        pkg = os.path.join(ROOT, "python", "linattn") if self.inplace else os.path.join(self.build_lib, "linattn")
        install_package_files(pkg)


def install_package_files(pkg):
    inc = os.path.join(pkg, "include", "linattn")
    if os.path.isdir(inc):
        shutil.rmtree(inc)
    shutil.copytree(os.path.join(ROOT, "csrc", "include", "linattn"), inc)
    cmake_dir = os.path.join(pkg, "share", "cmake", "linattn")
    os.makedirs(cmake_dir, exist_ok=True)
    shutil.copy(os.path.join(ROOT, "cmake", "linattnConfig.cmake"), cmake_dir)


def extension():
    cuda = want_cuda()
    cxx = ["-O3", "-fopenmp-simd", "-fno-trapping-math", "-fvisibility-inlines-hidden", "-DLINATTN_BUILDING_LIBRARY"]
    if cuda:
        cxx.append("-DLINATTN_WITH_CUDA")
    kwargs = dict(
        name="linattn.lib.liblinattn",
        sources=sources(cuda),
        include_dirs=[os.path.join(ROOT, "csrc", "include"), os.path.join(ROOT, "csrc"), ROOT],
        extra_link_args=["-Wl,-soname," + LIB_NAME] + ([shared_libstdcxx()] if shared_libstdcxx() else []),
    )
    if cuda:
        nvcc = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-lineinfo", "-DLINATTN_WITH_CUDA"]
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": nvcc + cuda_arch_flags()}
        ext = cpp_extension.CUDAExtension(**kwargs)
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext = cpp_extension.CppExtension(**kwargs)
    # C++ programs load this library without an interpreter: keep libtorch_python out of its dependencies.
    ext.libraries = [lib for lib in ext.libraries if lib != "torch_python"]
    return ext


setup(
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"linattn": ["lib/*.so", "include/linattn/*.h", "share/cmake/linattn/*.cmake"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=True)},
    zip_safe=False,
)
