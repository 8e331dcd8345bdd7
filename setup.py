"""Build script for the optional native extension; all metadata lives in pyproject.toml.

``jido._speedups`` (two checks on the signal decoder's fast path) is compiled when a C compiler
is present. It is optional: without a compiler the install still succeeds and the same checks
run in Python (see ``jido._codec``).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "jido._speedups",
            sources=["src/jido/_speedups.c"],
            optional=True,
        )
    ]
)
