"""MSDTMotionLib: algorithms of the MSDT Motion module (placeholder).

When built, Motion imports sEMG, IMU, C3D marker and 3D video recordings, computes sEMG fatigue features, IMU orientation and trunk angles and motion descriptors, streams serial sensors live and plots them in Slicer charts. Nothing is implemented yet.
"""
