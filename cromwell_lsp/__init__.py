"""Cromwell: a local, private AI assistant for code editors.

A language server with its own small vision-language model running on the CPU through
numpy and our C kernels (see kernels.py).  Nothing leaves the machine.
"""
__version__ = "0.1.0"
