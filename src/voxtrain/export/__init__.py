"""`voxtrain export --onnx` (export.onnx): a trained voice as a piper voice, parity-checked
against PyTorch; export.graph holds the traced modules. The voice config format and the
onnxruntime voice that plays it live in voxtrain.inference.

Nothing is imported here: the exporter needs torch, and importing it should cost nothing else.
"""
