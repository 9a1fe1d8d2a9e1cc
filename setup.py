"""Build hook: pyproject.toml holds the metadata; cffi compiles native/ through this."""
from setuptools import setup

setup(cffi_modules=["native/build.py:ffibuilder"])
