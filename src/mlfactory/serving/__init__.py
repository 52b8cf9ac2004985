"""HTTP serving of a bundle: FastAPI + ONNX Runtime, no torch (`mlfactory serve`)."""
