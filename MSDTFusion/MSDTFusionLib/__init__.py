"""MSDTFusionLib: algorithms of the MSDT Fusion module (placeholder).

When built, Fusion registers a depth-camera skin point cloud to the CT/MR skin surface without markers (with RMS, TRE, overlap and uncertainty), receives electromagnetic tracker transforms and live ultrasound over OpenIGTLink, and denoises ultrasound. Nothing is implemented yet.
"""
