"""The synthetic spine phantom: its analytic truth is exact by construction and consistent with its voxels.

Angles are recomputed here from the truth vectors (projections on the coronal x-z and sagittal y-z planes),
and voxel measurements (volumes, centroids, sphere means) are compared with the truth on 1.5-2 mm grids.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from MSDTLib import io, phantom
from MSDTLib.grid import Grid
from MSDTLib.phantom import BODY_DEPTH_MM, BODY_WIDTH_MM, DISC_LABEL

WEDGE = {"L2": 10.0}


def projected_angle(first: np.ndarray, second: np.ndarray, plane: tuple[int, int]) -> float:
    """Signed angle (degrees) from ``second`` to ``first`` after projecting both on a plane (axes indices)."""
    a, b = first[list(plane)], second[list(plane)]
    return math.degrees(math.atan2(a[0], a[1]) - math.atan2(b[0], b[1]))


def voxel_ras(ph: phantom.SpinePhantom, mask: np.ndarray) -> np.ndarray:
    return Grid(ph.labels.shape, ph.ijk_to_ras).ras_from_kji(np.argwhere(mask))


def voxel_ml(ph: phantom.SpinePhantom) -> float:
    return Grid(ph.labels.shape, ph.ijk_to_ras).voxel_volume_mm3 / 1000.0


def value_at(ph: phantom.SpinePhantom, array: np.ndarray, ras) -> float:
    kji = Grid(array.shape, ph.ijk_to_ras).kji_from_ras(np.asarray(ras, float)[None])[0]
    return array[tuple(np.round(kji).astype(int))]


@pytest.fixture(scope="module")
def spine():
    """Default anatomy (T12-S1, Cobb 20, lordosis 40) with an anterior wedge at L2, on a 1.5 mm grid."""
    return phantom.build_spine_phantom(voxel_mm=1.5, wedge_deg=WEDGE)


@pytest.fixture(scope="module")
def short_spines():
    """L3-L5 on an axis-aligned 2 mm grid and on an oblique, anisotropic grid."""
    straight = phantom.build_spine_phantom(levels=("L3", "L4", "L5"), voxel_mm=2.0)
    oblique = phantom.build_spine_phantom(levels=("L3", "L4", "L5"), voxel_mm=(1.8, 2.0, 2.2),
                                          rotation_deg=(10.0, -15.0, 25.0))
    return straight, oblique


# ---------------------------------------------------------------------------------------- truth alone


@pytest.mark.parametrize("cobb, lordosis, wedges", [(20.0, 40.0, {}), (35.0, 55.0, {"L1": 8.0, "L5": -6.0}),
                                                    (0.0, 0.0, {})])
def test_cobb_and_lordosis_are_exact(cobb, lordosis, wedges):
    ph = phantom.build_spine_phantom(voxel_mm=6.0, cobb_deg=cobb, lordosis_deg=lordosis, wedge_deg=wedges)
    v = ph.vertebrae
    assert list(v) == ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    assert (ph.cobb_upper, ph.cobb_lower, ph.cobb_apex) == ("T12", "L5", "L2-L3")
    coronal = projected_angle(v["T12"].superior_normal, v["L5"].inferior_normal, (0, 2))
    sagittal = projected_angle(v["S1"].superior_normal, v["L1"].superior_normal, (1, 2))
    assert coronal == pytest.approx(cobb, abs=1e-9) and ph.cobb_deg == pytest.approx(cobb, abs=1e-9)
    assert sagittal == pytest.approx(lordosis, abs=1e-9)
    assert ph.lordosis_deg == pytest.approx(lordosis, abs=1e-9)
    # The end vertebrae are the most tilted, so a search for the extremes finds the same Cobb angle.
    tilts = [phantom.coronal_angle_deg(t.superior_normal) for t in v.values()]
    assert max(tilts) == pytest.approx(cobb / 2) and min(tilts[:-1]) == pytest.approx(-cobb / 2)
    for truth in v.values():
        # Every normal of a vertebra has the vertebra's coronal tilt; the body axis bisects the normals.
        for normal in (truth.superior_normal, truth.inferior_normal):
            assert np.linalg.norm(normal) == pytest.approx(1.0) and normal[2] > 0
            assert phantom.coronal_angle_deg(normal) == pytest.approx(truth.coronal_tilt_deg, abs=1e-9)
        axis = truth.axes[:, 2]
        assert axis == pytest.approx((truth.superior_normal + truth.inferior_normal)
                                     / np.linalg.norm(truth.superior_normal + truth.inferior_normal))
        assert truth.axes.T @ truth.axes == pytest.approx(np.eye(3), abs=1e-12)
        assert np.linalg.det(truth.axes) == pytest.approx(1.0)
        assert truth.superior_center - truth.inferior_center == pytest.approx(26.0 * axis)
        assert (truth.superior_center + truth.inferior_center) / 2 == pytest.approx(truth.body_center)
        sup, inf = truth.superior_normal, truth.inferior_normal
        wedge = math.degrees(math.atan2(np.linalg.norm(np.cross(sup, inf)), sup @ inf))
        assert wedge == pytest.approx(abs(wedges.get(truth.level, 0.0)), abs=1e-6)
    for name, disc in ph.discs.items():
        upper, lower = name.split("-")
        assert disc.height_middle_mm == pytest.approx(9.0)
        assert np.linalg.norm(v[upper].inferior_center - v[lower].superior_center) == pytest.approx(9.0)
        assert disc.volume_ml == pytest.approx(math.pi * BODY_WIDTH_MM * BODY_DEPTH_MM / 4 * 9.0 / 1000)


def test_lordosis_is_concave_posteriorly_and_scoliosis_convex_left():
    ph = phantom.build_spine_phantom(voxel_mm=6.0)
    centres = np.array([t.body_center for t in ph.vertebrae.values()])
    ends = centres[[0, -1]]
    middle = centres[3]
    chord = ends[0] + (ends[1] - ends[0]) * (middle[2] - ends[0][2]) / (ends[1][2] - ends[0][2])
    assert middle[1] > chord[1] + 5      # apex anterior of the chord: lordosis
    assert middle[0] < chord[0] - 5      # apex to the patient's left
    # Lumbar discs are taller anteriorly in a lordosis.
    assert ph.discs["L4-L5"].height_anterior_mm > ph.discs["L4-L5"].height_posterior_mm + 3


def test_wedge_heights(spine):
    wedged, plain = spine.vertebrae["L2"], spine.vertebrae["L3"]
    inset = (0.5 - phantom.HEIGHT_INSET) * BODY_DEPTH_MM
    expected = 2 * inset * 2 * math.tan(math.radians(WEDGE["L2"]) / 2)
    assert wedged.height_posterior_mm - wedged.height_anterior_mm == pytest.approx(expected, abs=1e-12)
    assert wedged.height_middle_mm == pytest.approx(26.0)
    assert plain.height_anterior_mm == plain.height_middle_mm == plain.height_posterior_mm == 26.0
    # The disc below takes up the wedge (lordosis stays exact): it opens anteriorly by about as much.
    unwedged = phantom.build_spine_phantom(voxel_mm=6.0)

    def opening(ph):
        return ph.discs["L2-L3"].height_anterior_mm - ph.discs["L2-L3"].height_posterior_mm

    assert opening(spine) - opening(unwedged) == pytest.approx(expected, rel=0.05)
    # Heights on the voxels: the label's extent along the body axis at the anterior and posterior positions
    # (nearest voxel, so up to a voxel off).
    grid = Grid(spine.labels.shape, spine.ijk_to_ras)
    cases = ((wedged, inset, wedged.height_anterior_mm), (wedged, -inset, wedged.height_posterior_mm),
             (plain, inset, plain.height_anterior_mm))
    for truth, offset, height in cases:
        steps = np.arange(-20.0, 20.0, 0.05)
        line = truth.body_center + offset * truth.axes[:, 1] + steps[:, None] * truth.axes[:, 2]
        kji = np.round(grid.kji_from_ras(line)).astype(int)
        inside = spine.labels[tuple(kji.T)] == truth.label
        assert inside.sum() * 0.05 == pytest.approx(height, abs=1.6)


def test_levels_are_checked():
    with pytest.raises(ValueError):
        phantom.build_spine_phantom(levels=("L1", "L3"), voxel_mm=6.0)
    with pytest.raises(ValueError):
        phantom.build_spine_phantom(levels=("L2", "L1"), voxel_mm=6.0)
    with pytest.raises(ValueError):
        phantom.build_spine_phantom(voxel_mm=6.0, wedge_deg={"C3": 5.0})
    with pytest.raises(ValueError):
        phantom.build_spine_phantom(voxel_mm=6.0, disc_height_mm=1.0, cobb_deg=40.0)


# ------------------------------------------------------------------------------------ truth vs voxels


def test_label_table_and_tissue_values(spine):
    assert spine.class_table == {32: "vertebrae_T12", 31: "vertebrae_L1", 30: "vertebrae_L2",
                                 29: "vertebrae_L3", 28: "vertebrae_L4", 27: "vertebrae_L5",
                                 26: "vertebrae_S1", DISC_LABEL: "intervertebral_discs"}
    assert spine.image.dtype == np.float32 and spine.labels.dtype == np.int16
    assert set(np.unique(spine.labels)) == set(spine.class_table) | {0}
    l3 = spine.vertebrae["L3"]
    r, a, u = l3.axes.T
    canal = l3.body_center - (BODY_DEPTH_MM / 2 + phantom.CANAL_DEPTH_MM / 2) * a
    assert value_at(spine, spine.image, canal) == phantom.CSF_HU and value_at(spine, spine.labels, canal) == 0
    spinous = l3.body_center - 50 * a - 3 * u
    assert value_at(spine, spine.image, spinous) == phantom.ARCH_HU
    assert value_at(spine, spine.labels, spinous) == l3.label
    transverse = l3.body_center - 22 * a + 30 * r + 4 * u
    assert value_at(spine, spine.labels, transverse) == l3.label
    disc = spine.discs["L3-L4"].center
    assert value_at(spine, spine.image, disc) == phantom.DISC_HU
    assert value_at(spine, spine.labels, disc) == DISC_LABEL
    trunk = np.mean([t.body_center for t in spine.vertebrae.values()], axis=0)
    trunk[1] += phantom.TRUNK_ANTERIOR_SHIFT_MM
    trunk[2] = l3.body_center[2]
    front = phantom.TRUNK_SEMI_AXES_MM[1]
    assert value_at(spine, spine.image, trunk + [0.0, 60.0, 0.0]) == phantom.SOFT_TISSUE_HU
    assert value_at(spine, spine.image, trunk + [0.0, front - phantom.FAT_MM / 2, 0.0]) == phantom.FAT_HU
    assert value_at(spine, spine.image, trunk + [0.0, front + 3.0, 0.0]) == phantom.AIR_HU
    assert spine.image[0, 0, 0] == phantom.AIR_HU


def test_volumes_match_truth(spine):
    for truth in spine.vertebrae.values():
        measured = (spine.labels == truth.label).sum() * voxel_ml(spine)
        assert measured == pytest.approx(truth.volume_ml, rel=0.02), truth.level
        assert truth.body_volume_ml == pytest.approx(math.pi * 22 * 17 * 26 / 1000)
    assert spine.vertebrae["S1"].volume_ml == spine.vertebrae["S1"].body_volume_ml     # no arch
    assert spine.vertebrae["L3"].volume_ml > spine.vertebrae["L3"].body_volume_ml + 8   # the arch
    discs = (spine.labels == DISC_LABEL).sum() * voxel_ml(spine)
    assert discs == pytest.approx(sum(d.volume_ml for d in spine.discs.values()), rel=0.02)


def test_body_centroids_match_truth(spine):
    """The label voxels inside the body's elliptic cylinder are the body; their centroid is its centroid."""
    for truth in spine.vertebrae.values():
        points = voxel_ras(spine, spine.labels == truth.label)
        local = (points - truth.body_center) @ truth.axes
        body = points[(local[:, 0] / 22) ** 2 + (local[:, 1] / 17) ** 2 <= 1]
        # A wedge moves the volume centroid posteriorly by tan(w/2) D^2 / (8 H).
        shift = -math.tan(math.radians(truth.wedge_deg) / 2) * BODY_DEPTH_MM**2 / (8 * 26.0)
        expected = truth.body_center + shift * truth.axes[:, 1]
        assert np.linalg.norm(body.mean(axis=0) - expected) < 0.3, truth.level


def test_density_sphere_reads_hu_center_only_when_centred(spine):
    truth = spine.vertebrae["L3"]
    points = voxel_ras(spine, spine.labels == truth.label)
    values = spine.image[spine.labels == truth.label]

    def sphere_mean(centre, radius=6.0):
        return values[np.linalg.norm(points - centre, axis=1) <= radius].mean()

    assert sphere_mean(truth.body_center) == pytest.approx(150.0, abs=1.0)
    anterior, lateral = truth.axes[:, 1], truth.axes[:, 0]
    assert sphere_mean(truth.body_center + 7 * anterior) == pytest.approx(150.0 + 4.0 * 7, abs=1.0)
    assert sphere_mean(truth.body_center - 7 * anterior) == pytest.approx(150.0 - 4.0 * 7, abs=1.0)
    assert sphere_mean(truth.body_center + 10 * lateral) == pytest.approx(150.0, abs=1.0)


def test_partial_volume_at_the_endplate(spine):
    """The voxel whose centre lies on the L3 superior endplate mixes disc (80 HU) and cortex (700 HU)."""
    truth = spine.vertebrae["L3"]
    grid = Grid(spine.labels.shape, spine.ijk_to_ras)
    near = np.round(grid.kji_from_ras(truth.superior_center[None])[0]).astype(int)
    candidates = near + np.argwhere(np.ones((3, 3, 3))) - 1
    distance = np.abs((grid.ras_from_kji(candidates) - truth.superior_center) @ truth.superior_normal)
    straddling = tuple(candidates[np.argmin(distance)])
    assert phantom.DISC_HU + 60 < spine.image[straddling] < phantom.CORTEX_HU - 60
    # Elsewhere in the bone only pure values occur: cortex, arch and the trabecular gradient (88-212 HU).
    def mixed(image):
        values = np.unique(image)
        return int(((values > 215) & (values < phantom.CORTEX_HU) & (values != phantom.ARCH_HU)).sum())

    sharp = phantom.build_spine_phantom(levels=("L3", "L4"), voxel_mm=1.5, supersample=1)
    assert mixed(sharp.image) == 0 and mixed(spine.image) > 1000


# ------------------------------------------------------------------------------------------- the grid


def test_oblique_grid_keeps_the_anatomy(short_spines):
    straight, oblique = short_spines
    assert not np.allclose(oblique.ijk_to_ras[:3, :3] / np.linalg.norm(oblique.ijk_to_ras[:3, :3], axis=0),
                           np.eye(3))
    assert np.linalg.norm(oblique.ijk_to_ras[:3, :3], axis=0) == pytest.approx([1.8, 2.0, 2.2])
    for level, truth in straight.vertebrae.items():
        other = oblique.vertebrae[level]
        assert other.body_center == pytest.approx(truth.body_center)
        assert other.superior_normal == pytest.approx(truth.superior_normal)
        assert other.volume_ml == pytest.approx(truth.volume_ml)
        assert value_at(oblique, oblique.labels, truth.body_center) == truth.label
    for value in (29, 28, 27, DISC_LABEL):
        a = voxel_ras(straight, straight.labels == value)
        b = voxel_ras(oblique, oblique.labels == value)
        assert np.linalg.norm(a.mean(axis=0) - b.mean(axis=0)) < 0.5, value
        assert len(b) * voxel_ml(oblique) == pytest.approx(len(a) * voxel_ml(straight), rel=0.03), value
    assert math.isnan(straight.lordosis_deg)


def test_given_shape_and_noise():
    kwargs = {"levels": ("L4", "L5", "S1"), "voxel_mm": 4.0, "shape": (90, 70, 40)}
    clean = phantom.build_spine_phantom(**kwargs)
    noisy = phantom.build_spine_phantom(**kwargs, noise_hu=20.0, seed=3)
    again = phantom.build_spine_phantom(**kwargs, noise_hu=20.0, seed=3)
    assert clean.image.shape == clean.labels.shape == (40, 70, 90)
    assert np.array_equal(noisy.image, again.image) and np.array_equal(noisy.labels, clean.labels)
    assert np.std(noisy.image - clean.image) == pytest.approx(20.0, rel=0.05)
    centre = clean.ijk_to_ras[:3, :3] @ (np.array([90, 70, 40]) - 1) / 2 + clean.ijk_to_ras[:3, 3]
    spine_mid = np.mean([t.body_center for t in clean.vertebrae.values()], axis=0)
    assert np.linalg.norm((centre - spine_mid)[:2] - [0.0, phantom.TRUNK_ANTERIOR_SHIFT_MM]) < 1e-6


def test_nifti_keeps_geometry(short_spines, tmp_path):
    _, oblique = short_spines
    image_path, labels_path = oblique.write(tmp_path / "phantom")
    assert image_path.name == "image.nii.gz" and labels_path.name == "labels.nii.gz"
    image, labels = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(labels_path))
    assert io.ijk_to_ras_matrix(image) == pytest.approx(oblique.ijk_to_ras, abs=1e-4)
    assert io.ijk_to_ras_matrix(labels) == pytest.approx(oblique.ijk_to_ras, abs=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(image), oblique.image)
    assert np.array_equal(sitk.GetArrayFromImage(labels), oblique.labels)
    assert io.ijk_to_ras_matrix(oblique.sitk_image()) == pytest.approx(oblique.ijk_to_ras, abs=1e-9)
