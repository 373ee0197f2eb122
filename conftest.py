"""Shared pytest fixtures: sample data paths and headless MRML scenes."""

import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # before anything imports vtk
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SAMPLE = Path(__file__).parent / "Testing" / "Data" / "totalsegmentator_ct_mr_spine"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def scene():
    from MSDTLib.app import new_scene, shutdown_scene

    scene = new_scene()
    yield scene
    shutdown_scene(scene)


@pytest.fixture(scope="session")
def ct_twin():
    """The anatomy twin of the sample CT with TotalSegmentator's vertebra labels (built once)."""
    from MSDTLib import io, pipeline
    from MSDTLib.app import new_scene

    scene = new_scene()
    volume = io.load_volume(scene, SAMPLE / "example_ct.nii.gz")
    result = pipeline.build_anatomy_twin(scene, volume, SAMPLE / "spine_report" / "totalseg.nii.gz",
                                         progress=lambda *_: None)
    return scene, result
