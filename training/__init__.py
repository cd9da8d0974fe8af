"""Training, evaluation and ONNX export of DNABERT-2 sequence classifiers."""
