"""MSDTLib: the headless core of MSDT (scene, I/O, hierarchy, rendering) and the Anatomy algorithms.

Everything here imports without the Slicer GUI (no qt, ctk or ScriptedLoadableModule); the MRML classes come
from the ``slicer`` package, which PyPI ``slicer-core`` provides outside the application.
"""

__version__ = "0.1.0"
