"""Build hook for the one C extension; everything else is in pyproject.toml.

``service.contract._fastbpe`` is the byte-pair encoder of normalised sequences. It is optional:
where no C compiler is at hand the build goes on without it and the service tokenizes with the
``tokenizers`` library (the same ids, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "service.contract._fastbpe",
            ["service/contract/_fastbpe.c"],
            extra_compile_args=["-O3", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    ]
)
