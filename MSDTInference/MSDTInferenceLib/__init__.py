"""MSDTInferenceLib: algorithms of the MSDT Inference module (placeholder).

When built, Inference builds a per-patient feature graph from the twin and estimates a calibrated risk of surgery within 6-12 months, with uncertainty, per-feature contributions, suggested next exams and longitudinal updates. Nothing is implemented yet.
"""
