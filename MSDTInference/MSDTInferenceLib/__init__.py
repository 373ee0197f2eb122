"""MSDTInferenceLib: algorithms of the MSDT Inference module (placeholder).

Inference will run learned models on the twin (segmentation, landmark and load predictions). Nothing is
implemented yet.
"""
