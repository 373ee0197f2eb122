"""Errors MSDT raises for bad input: one class, a readable message that names the problem."""


class MSDTError(ValueError):
    """Input or state that MSDT cannot work with (missing file, empty volume, disjoint label map, ...).

    The message is meant for the person at the screen; the CLI prints it and exits with code 2.
    """
