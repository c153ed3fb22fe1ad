"""Stage 5, using a trained model: prediction on images and export to ONNX / TorchScript.

Never imports ``attrfit.training``.
"""
