"""Export of segments to STL/OBJ for 3D printing (see :mod:`MSDTLib.surfaces`)."""

from .surfaces import export_segments, write_surface

__all__ = ["export_segments", "write_surface"]
