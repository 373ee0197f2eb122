"""Point cloud readers/writers, depth back-projection and filters (no MRML scene needed)."""

import struct

import numpy as np
import pytest

from MSDTFusionLib import pointclouds as pc
from MSDTLib.errors import MSDTError


@pytest.fixture
def cloud():
    rng = np.random.default_rng(7)
    return rng.uniform(-300, 300, (500, 3)) + [0, 100, 250]


@pytest.mark.parametrize("name,binary", [("c.ply", True), ("c.ply", False), ("c.pcd", True), ("c.pcd", False),
                                         ("c.xyz", True), ("c.csv", True), ("c.txt", True), ("c.npy", True)])
def test_round_trip(tmp_path, cloud, name, binary):
    path = pc.write_point_cloud(tmp_path / name, cloud, binary=binary)
    back = pc.read_point_cloud(path)
    assert back.dtype == np.float64 and back.shape == cloud.shape
    np.testing.assert_allclose(back, cloud, atol=1e-5)


def test_pcd_binary_float32_extra_fields_and_nan_rows(tmp_path):
    """PCL's usual layout: float32 x y z, a packed rgb field, organised cloud with NaN for missing depth."""
    points = np.array([[1.5, 2.5, 3.5], [np.nan, np.nan, np.nan], [-4.0, 5.0, 600.25], [7, 8, 9]], np.float32)
    rgb = np.array([1, 2, 3, 4], np.uint32)
    header = (b"# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F U\nCOUNT 1 1 1 1\n"
              b"WIDTH 2\nHEIGHT 2\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA binary\n")
    record = np.zeros(4, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    record["x"], record["y"], record["z"], record["rgb"] = points[:, 0], points[:, 1], points[:, 2], rgb
    (tmp_path / "o.pcd").write_bytes(header + record.tobytes())
    back = pc.read_point_cloud(tmp_path / "o.pcd")
    np.testing.assert_allclose(back, points[[0, 2, 3]].astype(float))


def test_pcd_ascii_with_count_and_field_order(tmp_path):
    text = ("VERSION .7\nFIELDS normal_x normal_y normal_z z y x\nSIZE 4 4 4 4 4 4\nTYPE F F F F F F\n"
            "COUNT 1 1 1 1 1 1\nWIDTH 2\nHEIGHT 1\nPOINTS 2\nDATA ascii\n0 0 1 3 2 1\n0 1 0 6 5 4\n")
    (tmp_path / "a.pcd").write_text(text)
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "a.pcd"), [[1, 2, 3], [4, 5, 6]])


def test_lzf_back_reference_and_binary_compressed_pcd(tmp_path):
    # literal "abc" then a back reference copying 6 bytes from 3 back (overlapping): "abcabcabc"
    assert pc.lzf_decompress(bytes([2]) + b"abc" + bytes([(4 << 5) | 0, 2]), 9) == b"abcabcabc"
    with pytest.raises(MSDTError, match="LZF"):
        pc.lzf_decompress(bytes([(4 << 5), 10]), 6)
    # binary_compressed: fields one after the other (all x, all y, all z), stored as LZF literal runs
    points = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9.5]], np.float32)
    raw = points.T.tobytes()
    compressed = b"".join(bytes([len(raw[i:i + 32]) - 1]) + raw[i:i + 32] for i in range(0, len(raw), 32))
    header = (b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH 3\nHEIGHT 1\nPOINTS 3\n"
              b"DATA binary_compressed\n")
    (tmp_path / "c.pcd").write_bytes(header + struct.pack("<II", len(compressed), len(raw)) + compressed)
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "c.pcd"), points)


def test_ply_with_faces_colours_and_big_endian(tmp_path):
    text = ("ply\nformat ascii 1.0\ncomment made by hand\nelement vertex 3\nproperty float x\nproperty float y\n"
            "property float z\nproperty uchar red\nelement face 1\nproperty list uchar int vertex_indices\n"
            "end_header\n0 0 0 255\n1 0 0 0\n0 1 0 9\n3 0 1 2\n")
    (tmp_path / "f.ply").write_text(text)
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "f.ply"), [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    big = (b"ply\nformat binary_big_endian 1.0\nelement vertex 2\nproperty double x\nproperty double y\n"
           b"property double z\nend_header\n" + np.array([[1, 2, 3], [4, 5, 6]], ">f8").tobytes())
    (tmp_path / "b.ply").write_bytes(big)
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "b.ply"), [[1, 2, 3], [4, 5, 6]])


def test_text_formats(tmp_path):
    (tmp_path / "h.csv").write_text("X,Y,Z,intensity\n1,2,3,0.5\n4,5,6,0.7\n")
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "h.csv"), [[1, 2, 3], [4, 5, 6]])
    (tmp_path / "o.csv").write_text("intensity,z,y,x\n0.5,3,2,1\n")
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "o.csv"), [[1, 2, 3]])
    (tmp_path / "w.xyz").write_text("# scanner output\n1 2 3 100 100 100\n  4\t5 6 1 1 1\n")
    np.testing.assert_allclose(pc.read_point_cloud(tmp_path / "w.xyz"), [[1, 2, 3], [4, 5, 6]])


def test_bad_inputs(tmp_path):
    with pytest.raises(MSDTError, match="does not exist"):
        pc.read_point_cloud(tmp_path / "missing.ply")
    (tmp_path / "x.obj").write_text("v 1 2 3\n")
    with pytest.raises(MSDTError, match="Unsupported"):
        pc.read_point_cloud(tmp_path / "x.obj")
    (tmp_path / "g.ply").write_text("garbage\n")
    with pytest.raises(MSDTError, match="not a PLY"):
        pc.read_point_cloud(tmp_path / "g.ply")
    (tmp_path / "g.pcd").write_text("hello\nDATA ascii\n1 2 3\n")
    with pytest.raises(MSDTError, match="FIELDS"):
        pc.read_point_cloud(tmp_path / "g.pcd")
    (tmp_path / "t.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n"
                                     b"property float y\nproperty float z\nend_header\n" + bytes(12))
    with pytest.raises(MSDTError, match="truncated"):
        pc.read_point_cloud(tmp_path / "t.ply")
    (tmp_path / "e.xyz").write_text("")
    with pytest.raises(MSDTError, match="empty"):
        pc.read_point_cloud(tmp_path / "e.xyz")
    (tmp_path / "n.xyz").write_text("1 2 3\nfoo bar baz\n")
    with pytest.raises(MSDTError, match="not numeric"):
        pc.read_point_cloud(tmp_path / "n.xyz")
    np.save(tmp_path / "nan.npy", np.full((10, 3), np.nan))
    with pytest.raises(MSDTError, match="no finite points"):
        pc.read_point_cloud(tmp_path / "nan.npy")
    with pytest.raises(MSDTError, match="empty"):
        pc.as_points(np.zeros((0, 3)))
    with pytest.raises(MSDTError, match=r"\(N, 3\)"):
        pc.as_points(np.zeros((5, 2)))
    with pytest.raises(MSDTError, match="no finite points"):
        pc.write_point_cloud(tmp_path / "w.ply", np.full((3, 3), np.nan))


def test_depth_plane_at_known_depth(tmp_path):
    fx, fy, cx, cy = 525.0, 520.0, 319.5, 239.5
    depth = np.full((480, 640), 800, np.uint16)
    depth[:, :100] = 0  # no data
    points, pixels = pc.depth_to_points(depth, fx, fy, cx, cy, return_pixels=True)
    assert len(points) == 480 * 540
    np.testing.assert_allclose(points[:, 2], 800.0)
    row, col = pixels[0]
    np.testing.assert_allclose(points[0, :2], [(col - cx) * 800 / fx, (row - cy) * 800 / fy])
    # the principal point projects onto the optical axis; scale converts raw units to mm
    centre = pc.depth_to_points(np.full((3, 3), 4000, np.uint16), 500, 500, 1, 1, depth_scale_mm=0.25)
    np.testing.assert_allclose(centre[4], [0, 0, 1000])

    import SimpleITK as sitk
    sitk.WriteImage(sitk.GetImageFromArray(depth), str(tmp_path / "depth.png"))
    from_png = pc.depth_to_points(tmp_path / "depth.png", fx, fy, cx, cy)
    np.testing.assert_allclose(from_png, points)
    np.save(tmp_path / "depth.npy", depth)
    np.testing.assert_allclose(pc.depth_to_points(tmp_path / "depth.npy", fx, fy, cx, cy), points)


def test_depth_tilted_plane_is_planar():
    fx = fy = 400.0
    rows, cols = np.mgrid[0:120, 0:160]
    # plane z = 1000 + 0.3 x  ->  z = 1000 / (1 - 0.3 (u - cx) / fx)
    depth = 1000.0 / (1.0 - 0.3 * (cols - 80) / fx)
    points = pc.depth_to_points(depth, fx, fy, 80, 60)
    np.testing.assert_allclose(points[:, 2], 1000 + 0.3 * points[:, 0], atol=1e-6)


def test_depth_errors():
    with pytest.raises(MSDTError, match="no finite points"):
        pc.depth_to_points(np.zeros((4, 4), np.uint16), 500, 500, 2, 2)
    with pytest.raises(MSDTError, match="2D"):
        pc.depth_to_points(np.zeros((4, 4, 3)), 500, 500, 2, 2)
    with pytest.raises(MSDTError, match="positive"):
        pc.depth_to_points(np.ones((4, 4)), 0, 500, 2, 2)


def test_voxel_downsample_and_outliers():
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(10.0)] * 3), -1).reshape(-1, 3)
    dense = np.repeat(grid, 4, axis=0) + rng.uniform(-0.2, 0.2, (4000, 3))
    down = pc.voxel_downsample(dense, 1.0)
    assert len(down) == 1000
    sphere = rng.normal(size=(3000, 3))
    sphere = 100 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
    outliers = rng.uniform(-400, 400, (30, 3))
    outliers = outliers[np.linalg.norm(outliers, axis=1) > 200]
    kept, mask = pc.remove_outliers(np.concatenate([sphere, outliers]), k=16, std_ratio=2.0, return_mask=True)
    assert not mask[len(sphere):].any()
    assert mask[:len(sphere)].mean() > 0.97
    assert len(kept) == mask.sum()
    with pytest.raises(MSDTError):
        pc.voxel_downsample(dense, 0)


def test_normals_on_sphere_and_plane():
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(2000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    sphere = 100 * directions + [10, 20, 30]
    normals = pc.estimate_normals(sphere, k=16)
    assert np.median(np.einsum("ij,ij->i", normals, directions)) > 0.99
    assert (np.einsum("ij,ij->i", normals, directions) > 0).mean() > 0.99  # outwards, consistently
    inward = pc.estimate_normals(sphere, k=16, viewpoint=[10, 20, 30])
    assert (np.einsum("ij,ij->i", inward, directions) < 0).all()
    # a camera-like patch: normals towards the viewpoint
    plane = np.column_stack([rng.uniform(-100, 100, (1000, 2)), np.full(1000, 900.0)])
    towards = pc.estimate_normals(plane, viewpoint=(0, 0, 0))
    np.testing.assert_allclose(towards, np.tile([0, 0, -1.0], (1000, 1)), atol=1e-6)
