"""GUI helpers shared by the MSDT modules' widgets (Slicer application only; the science is in the Libs).

``MSDTWidgetMixin`` gives a widget the MSDT way of running an action: busy while it runs, a bad input
(``MSDTError``) reported in plain words, anything else with its traceback, and an offer to pip-install a
Python package the module's Lib needs. The widget provides ``moduleTitle``, ``_setBusy(bool)`` and a logic
with ``missingPythonPackage()``.
"""

import importlib
import logging
import traceback

import slicer
from slicer.i18n import tr as _


class MSDTWidgetMixin:
    """Shared widget behaviour of the MSDT modules (see the module docstring)."""

    moduleTitle = "MSDT"

    def _run(self, errorTitle: str, function, *args, **kwargs):
        """Run ``function`` busy; returns (result, True), or (None, False) after reporting the error once the
        wait cursor is back (MSDTError plainly, anything else with its traceback)."""
        result, error, details = None, None, ""
        self._setBusy(True)
        try:
            result = function(*args, **kwargs)
        except Exception as caught:  # reported below, once the wait cursor is gone
            error, details = caught, traceback.format_exc()
            logging.error(details)
        finally:
            self._setBusy(False)
        if error is not None:
            self._reportError(error, errorTitle, details)
            return None, False
        return result, True

    def _reportError(self, error, title: str, details: str) -> None:
        """Show an error: an MSDTError is a bad input (its message says why), anything else is a bug."""
        from MSDTLib.errors import MSDTError

        if isinstance(error, MSDTError):
            slicer.util.errorDisplay(str(error), windowTitle=title)
        else:
            slicer.util.errorDisplay(
                _("Unexpected error: {error}").format(error=error), windowTitle=title, detailedText=details
            )

    def _offerMissingPackage(self) -> bool:
        """Offer to pip-install a Python package the module's Lib needs; True when the Lib can be imported."""
        windowTitle = _("{module}: missing Python package").format(module=self.moduleTitle)
        try:
            missing = self.logic.missingPythonPackage()
            while missing is not None:
                if not slicer.util.confirmOkCancelDisplay(
                    _("{module} needs the Python package '{package}', which is not installed. Install it now?").format(
                        module=self.moduleTitle, package=missing
                    ),
                    windowTitle=windowTitle,
                ):
                    return False
                slicer.util.pip_install(missing)
                importlib.invalidate_caches()
                previous, missing = missing, self.logic.missingPythonPackage()
                if missing == previous:
                    slicer.util.errorDisplay(_("Installing '{package}' did not help.").format(package=missing))
                    return False
        except Exception as error:  # e.g. a module the Lib imports that pip cannot provide by that name
            logging.error(traceback.format_exc())
            slicer.util.errorDisplay(
                _("The {module} library cannot be imported: {error}").format(module=self.moduleTitle, error=error),
                windowTitle=windowTitle,
                detailedText=traceback.format_exc(),
            )
            return False
        return True
