"""MSDTFusionLib: algorithms of the MSDT Fusion module, importable without the Slicer GUI.

* ``pointclouds``: read/write PLY, PCD, XYZ/CSV, NPY and depth images; down-sampling, outliers, normals.
* ``registration``: markerless camera-cloud to skin-surface registration (global multi-start search, trimmed
  point-to-plane ICP) with RMS, inliers, overlap, convergence, uncertainty and ambiguity; ``tre`` for landmarks.
* ``registerworkflow``: files in, MRML nodes (``CameraToMRI``) and ITK ``.h5`` out (``msdt register``).
* ``igt``, ``igtsim``, ``recording``: OpenIGTLink client/server, PLUS replay simulator, sequence recording.
"""
