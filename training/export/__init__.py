"""From a trained classifier to a model folder the service serves: ONNX graphs verified against
PyTorch and the card (:mod:`.onnx`), and optional int8 graphs measured against fp32
(:mod:`.quantize`)."""
