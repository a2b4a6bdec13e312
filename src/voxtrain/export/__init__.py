"""Deployable voices: `voxtrain export --onnx` (export.onnx) and the onnx engine (export.engine).

Nothing is imported here: the engine must load without torch, the exporter needs it.
"""
