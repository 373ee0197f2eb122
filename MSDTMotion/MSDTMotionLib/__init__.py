"""MSDTMotionLib: algorithms of the MSDT Motion module (placeholder).

Motion will pose the anatomy twin of the spine and trunk (segmental rotations, trunk flexion, motion-capture
driven kinematics). Nothing is implemented yet.
"""
