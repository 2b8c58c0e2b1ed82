"""Build bridge: every Cython kernel src/NAME.pyx becomes the extension module lmmfast.NAME.

OpenMP flags are added only where the compiler accepts them: a tiny program using
omp_get_max_threads() is compiled and linked with -fopenmp first.  Without OpenMP the
kernels build serially (their prange loops run on one thread) and give the same numbers.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

OMP_TEST = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


def openmp_flags() -> list[str]:
    """["-fopenmp"] if the C compiler builds and links an OpenMP program with it, else []."""
    if os.environ.get("LMMFAST_NO_OPENMP"):
        return []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    if not shutil.which(cc[0]):
        return []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "omp.c"
        src.write_text(OMP_TEST)
        try:
            r = subprocess.run([*cc, "-fopenmp", str(src), "-o", str(Path(tmp) / "omp")],
                               capture_output=True, timeout=120)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return []
    if r.returncode != 0:
        print("lmmfast: the C compiler does not support -fopenmp; building without OpenMP",
              file=sys.stderr)  # fmt: skip
        return []
    return ["-fopenmp"]


omp = openmp_flags()
extensions = [
    Extension(
        f"lmmfast.{pyx.stem}",
        [str(pyx)],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3", *omp],
        extra_link_args=omp,
    )
    for pyx in sorted(Path("src").glob("*.pyx"))
]
if not extensions:  # an sdist without the kernels would build a wheel that cannot import
    sys.exit("setup.py: no src/*.pyx found; the Cython kernels are part of the source")

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
