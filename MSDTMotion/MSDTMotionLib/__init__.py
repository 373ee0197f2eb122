"""MSDTMotionLib: algorithms of the MSDT Motion module, importable without the Slicer GUI.

* ``importers``: C3D (ezc3d: markers, analog channels with names, rates, units), CSV/TXT (sample rate from an
  argument, a header or a jittery time column), tables and markups on the scene.
* ``emg``: zero-phase filters, envelopes, IEMG/RMS/MNF/MDF per window, fatigue slopes with confidence intervals,
  symmetry, onsets. ``imu``: VQF orientation (Madgwick as a baseline), BROAD error metrics, trunk angles.
* ``serialstream``: live serial sensor lines into a ring buffer and MRML tables. ``plots``: plot nodes, PNG, HTML.
* ``motionworkflow`` / ``commands``: ``msdt emg`` and ``msdt imu``.
"""
