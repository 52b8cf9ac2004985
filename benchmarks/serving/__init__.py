"""Serving benchmark: mlfactory's API against bare ONNX Runtime, a seed-style server and LitServe.

Run from the repository root: `.venv/bin/python -m benchmarks.serving.run --help`.
"""
