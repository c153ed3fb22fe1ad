"""Using a trained model: prediction on images and on a tracker's boxes, and export to ONNX / TorchScript.

Never imports ``attrfit.training``.
"""
