"""cffi build script for the native kernels (API mode).

`setup.py` names it in `cffi_modules`, so `pip install -e .` compiles every native/*.c
into the extension module `cromwell_lsp._native`.  For a quick rebuild while working on
the C code, run `python native/build.py`: it compiles the module in place.

The cdef is read from kernels.h itself (the one C API), so the header and the Python
binding can never disagree.  Per-ISA files choose their instruction set with a
`#pragma GCC target` line at their top, so the module is built with -O3 only and the
scalar reference stays safe on any x86-64 CPU.
"""
import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _cdef_from_header(path):
    """The declarations of kernels.h in the form cffi's cdef accepts."""
    lines = []
    for line in open(path, encoding="utf-8"):
        define = re.match(r"#define\s+(CW_\w+)\s+\S+", line)
        if define:
            lines.append(f"#define {define.group(1)} ...")
        elif not line.startswith("#"):
            lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header(os.path.join(HERE, "kernels.h")))
ffibuilder.set_source(
    "cromwell_lsp._native",
    '#include "kernels.h"',
    sources=sorted(os.path.relpath(p) for p in glob.glob(os.path.join(HERE, "*.c"))),
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O3", "-fopenmp", "-std=gnu11", "-Wall", "-Wno-unused-function"],
    extra_link_args=["-fopenmp"],
)

if __name__ == "__main__":
    os.chdir(os.path.dirname(HERE))
    # The same file name pip gives the module, so a dev build never shadows an install.
    ffibuilder.compile(tmpdir=".", target="_native.abi3.so", verbose=False)
