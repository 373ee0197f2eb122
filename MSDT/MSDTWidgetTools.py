"""GUI helpers shared by the MSDT modules' widgets (Slicer application only; the science is in the Libs).

``MSDTWidgetMixin`` gives a widget the MSDT way of running an action: busy while it runs, a bad input
(``MSDTError``) reported in plain words, anything else with its traceback, and an offer to pip-install a
Python package the module's Lib needs; and the parameter-node plumbing of Slicer's module template (bind the
GUI to the node, follow it on enter, let go on exit, pick it up again after a scene close). The widget provides
``moduleTitle``, ``ui``, ``_setBusy(bool)``, ``_updateGUIState()`` and a logic with ``getParameterNode()`` and
``missingPythonPackage()``.
"""

import importlib
import logging
import traceback

import qt
import slicer
import vtk
from slicer.i18n import tr as _


class MSDTWidgetMixin:
    """Shared widget behaviour of the MSDT modules (see the module docstring)."""

    moduleTitle = "MSDT"
    _parameterNode = None
    _parameterNodeGuiTag = None

    # ------------------------------------------------------------------------------------ parameter node

    def _parameterNodeObserver(self):
        """Method called when the parameter node changes (a widget may refresh more than its GUI state)."""
        return self._updateGUIState

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        """Bind the GUI to a parameter node (or to none); the widgets then follow the node and vice versa."""
        self._disconnectParameterNode()
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._parameterNodeObserver())
        self._updateGUIState()

    def _disconnectParameterNode(self) -> None:
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._parameterNodeObserver())

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens another module: stop updating the GUI from the parameter node (live
        data streams keep running)."""
        self._disconnectParameterNode()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ------------------------------------------------------------------------------------ running actions

    def _setBusy(self, busy: bool) -> None:
        """Wait cursor while an action runs; the GUI state follows ``self._busy``."""
        self._busy = busy
        if busy:
            qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        else:
            qt.QApplication.restoreOverrideCursor()
        self._updateGUIState()
        slicer.app.processEvents()


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
