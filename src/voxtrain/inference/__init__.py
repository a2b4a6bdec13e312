"""Inference: a trained voice speaks text, with PyTorch or onnxruntime, whole or streamed.

    errors        SynthError (and its kinds: StreamError, OnnxVoiceError)
    plan          the synthesis plan: texts, where each goes, the foreign-text policy (and its default)
    streaming     mel windows vocoded with context, chunk sizes, the stream to files or stdout
    loader        the one voice loader: a .pt checkpoint or a .safetensors export -> AcousticModel
    torch_voice   Synthesizer: text -> mel -> HiFi-GAN or Griffin-Lim, with PyTorch
    voice_config  VOICE.onnx.json: piper's voice config plus voxtrain's section
    onnx_voice    OnnxVoice: an exported voice run by onnxruntime, without torch
    entry         synthesize / synthesize_stream: a plan spoken by either voice (`voxtrain synth`)

Nothing is imported here: the onnxruntime voice must load without torch.
"""
