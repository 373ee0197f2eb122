"""MSDTInferenceLib: algorithms of the MSDT Inference module, importable without the Slicer GUI.

* ``featuregraph``: the per-patient feature graph (networkx) from MSDT summaries and clinical values; GraphML,
  JSON and scene storage. ``longitudinal``: visits, risk trajectory, plots.
* ``risk``: penalised logistic regression with a Laplace posterior (90 % intervals), calibration checks, missing
  features marginalised, per-feature contributions, exam suggestions by value of information; ``cohort``: a
  synthetic cohort with a known risk function for validation.
* ``panel``: chord diagram (HTML/SVG, PNG), contributions and risk gauge pictures, report page.
* ``riskworkflow``, ``riskreport``, ``commands``: ``msdt risk-train`` and ``msdt risk``.
"""
