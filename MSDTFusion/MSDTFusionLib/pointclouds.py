"""Point clouds of the patient's skin from depth cameras: file readers and writers, depth images to points,
down-sampling, outlier removal and normals (pure numpy/scipy).

Every function takes and returns ``(N, 3)`` float64 arrays in millimetres. Rows that are not finite (NaN or
infinite coordinates, the usual "no depth" marker of organised clouds) are dropped when a cloud is read or
checked; a cloud with nothing left raises :class:`MSDTLib.errors.MSDTError`.

Formats: PLY (ascii, binary little/big endian), PCD (ascii, binary, binary_compressed), XYZ/TXT/CSV
(whitespace or comma separated, optional header line), NPY. Depth images: 16-bit PNG or NPY.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from MSDTLib.errors import MSDTError

POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".txt", ".csv", ".pts", ".npy")


# ------------------------------------------------------------------------------------------- checks

def as_points(points, name: str = "point cloud", min_points: int = 1) -> np.ndarray:
    """``points`` as a finite ``(N, 3)`` float64 array: NaN/infinite rows dropped; raises on nothing left."""
    try:
        array = np.asarray(points, dtype=float)
    except (TypeError, ValueError) as error:
        raise MSDTError(f"The {name} is not numeric ({error}).") from None
    if array.ndim == 3 and array.shape[-1] >= 3:  # organised cloud (H, W, 3)
        array = array.reshape(-1, array.shape[-1])
    if array.ndim != 2 or array.shape[1] < 3:
        raise MSDTError(f"The {name} must be an (N, 3) array of x, y, z; got shape {array.shape}.")
    array = array[:, :3]
    if array.shape[0] == 0:
        raise MSDTError(f"The {name} is empty (no points).")
    array = array[np.isfinite(array).all(axis=1)]
    if array.shape[0] == 0:
        raise MSDTError(f"The {name} has no finite points (every coordinate is NaN or infinite).")
    if array.shape[0] < min_points:
        raise MSDTError(f"The {name} has only {array.shape[0]} finite points; at least {min_points} are needed.")
    return np.ascontiguousarray(array)


# ------------------------------------------------------------------------------------------- readers

def read_point_cloud(path: str | Path) -> np.ndarray:
    """Points ``(N, 3)`` float64 of a PLY, PCD, XYZ/TXT/CSV/PTS or NPY file (NaN rows dropped)."""
    path = Path(path)
    if not path.is_file():
        raise MSDTError(f"Point cloud file '{path}' does not exist.")
    suffix = path.suffix.lower()
    readers = {".ply": _read_ply, ".pcd": _read_pcd, ".npy": _read_npy}
    reader = readers.get(suffix, _read_text if suffix in (".xyz", ".txt", ".csv", ".pts") else None)
    if reader is None:
        raise MSDTError(f"Unsupported point cloud format '{suffix}' ('{path.name}'); "
                        f"use one of {', '.join(POINT_CLOUD_SUFFIXES)}.")
    try:
        points = reader(path)
    except MSDTError:
        raise
    except (ValueError, OSError, EOFError, IndexError, KeyError) as error:
        raise MSDTError(f"Could not read point cloud '{path.name}': {error}") from None
    return as_points(points, f"point cloud '{path.name}'")


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        raise MSDTError(f"'{path.name}' is not a numeric NPY array ({error}).") from None


def _read_text(path: Path) -> np.ndarray:
    """Whitespace or comma separated columns; a header line (or comment lines) may come first. Columns
    named x, y, z in the header are used, else the first three."""
    text = path.read_text(errors="replace")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("#", "//"))]
    if not lines:
        raise MSDTError(f"'{path.name}' holds no points (empty text file).")
    delimiter = next((d for d in (",", ";") if any(d in line for line in lines[:3])), None)

    def fields(line):
        return [f.strip() for f in (line.split(delimiter) if delimiter else line.split())]

    def numeric(line):
        try:
            [float(v) for v in fields(line)]
            return True
        except ValueError:
            return False

    columns = [0, 1, 2]
    header = None
    if not numeric(lines[0]):
        header, lines = [f.strip("\"' ").lower() for f in fields(lines[0])], lines[1:]
        if all(axis in header for axis in "xyz"):
            columns = [header.index(axis) for axis in "xyz"]
    if not lines:
        raise MSDTError(f"'{path.name}' has a header but no points.")
    rows = []
    for number, line in enumerate(lines, start=2 if header else 1):
        values = fields(line)
        if len(values) <= max(columns):
            raise MSDTError(f"'{path.name}' line {number}: expected at least {max(columns) + 1} columns, "
                            f"got {len(values)}.")
        try:
            rows.append([float(values[c]) for c in columns])
        except ValueError:
            raise MSDTError(f"'{path.name}' line {number} is not numeric: '{line[:60]}'.") from None
    return np.array(rows, dtype=float)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


def _read_ply(path: Path) -> np.ndarray:
    """The x, y, z properties of the ``vertex`` element (any element order, any extra properties)."""
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise MSDTError(f"'{path.name}' is not a PLY file (it does not start with 'ply').")
        fmt, elements = None, []  # elements: [name, count, [(property, type or ('list', count_t, item_t))]]
        while True:
            raw = handle.readline()
            if not raw:
                raise MSDTError(f"'{path.name}': PLY header has no 'end_header'.")
            words = raw.decode("ascii", errors="replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append([words[1], int(words[2]), []])
            elif words[0] == "property" and elements:
                if words[1] == "list":
                    elements[-1][2].append((words[4], ("list", _PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
                else:
                    elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
            raise MSDTError(f"'{path.name}': unknown PLY format '{fmt}'.")
        names = [e[0] for e in elements]
        if "vertex" not in names:
            raise MSDTError(f"'{path.name}': PLY file has no 'vertex' element.")
        vertex = elements[names.index("vertex")]
        props = [p[0] for p in vertex[2]]
        if not all(axis in props for axis in "xyz"):
            raise MSDTError(f"'{path.name}': PLY vertices have no x, y, z properties ({props}).")
        if any(isinstance(p[1], tuple) for p in vertex[2]):
            raise MSDTError(f"'{path.name}': PLY vertex element with list properties is not supported.")
        if fmt == "ascii":
            return _ply_ascii_vertices(handle, elements, vertex, path)
        order = "<" if fmt == "binary_little_endian" else ">"
        for name, count, properties in elements:
            if name == "vertex":
                break
            _skip_binary_element(handle, count, properties, order)
        dtype = np.dtype([(p, order + t) for p, t in vertex[2]])
        data = handle.read(dtype.itemsize * vertex[1])
        if len(data) < dtype.itemsize * vertex[1]:
            raise MSDTError(f"'{path.name}': PLY file is truncated ({vertex[1]} vertices announced).")
        table = np.frombuffer(data, dtype=dtype, count=vertex[1])
        return np.column_stack([table[a].astype(float) for a in "xyz"])


def _skip_binary_element(handle, count, properties, order):
    if not any(isinstance(t, tuple) for _, t in properties):
        handle.seek(count * sum(np.dtype(t).itemsize for _, t in properties), 1)
        return
    for _ in range(count):
        for _, kind in properties:
            if isinstance(kind, tuple):
                count_t = np.dtype(order + kind[1])
                n = int(np.frombuffer(handle.read(count_t.itemsize), dtype=count_t)[0])
                handle.seek(n * np.dtype(kind[2]).itemsize, 1)
            else:
                handle.seek(np.dtype(kind).itemsize, 1)


def _ply_ascii_vertices(handle, elements, vertex, path):
    lines = handle.read().decode("ascii", errors="replace").splitlines()
    lines = [line for line in lines if line.strip()]
    start = 0
    for name, count, _ in elements:
        if name == "vertex":
            break
        start += count
    block = lines[start:start + vertex[1]]
    if len(block) < vertex[1]:
        raise MSDTError(f"'{path.name}': PLY file is truncated ({vertex[1]} vertices announced, "
                        f"{len(block)} found).")
    props = [p[0] for p in vertex[2]]
    columns = [props.index(a) for a in "xyz"]
    table = np.array([line.split() for line in block], dtype=float) if block else np.zeros((0, len(props)))
    return table[:, columns]


def _parse_pcd_header(handle, path: Path) -> dict:
    header = {}
    while True:
        raw = handle.readline()
        if not raw:
            raise MSDTError(f"'{path.name}': PCD header has no DATA line.")
        line = raw.decode("ascii", errors="replace").strip()
        if not line or line.startswith("#"):
            continue
        key, *values = line.split()
        header[key.upper()] = values
        if key.upper() == "DATA":
            break
    if "FIELDS" not in header:
        raise MSDTError(f"'{path.name}' is not a PCD file (no FIELDS line in the header).")
    fields = header["FIELDS"]
    count = len(fields)
    sizes = [int(v) for v in header.get("SIZE", ["4"] * count)]
    types = [v.upper() for v in header.get("TYPE", ["F"] * count)]
    counts = [int(v) for v in header.get("COUNT", ["1"] * count)]
    if not (len(sizes) == len(types) == len(counts) == count):
        raise MSDTError(f"'{path.name}': PCD FIELDS, SIZE, TYPE and COUNT have different lengths.")
    width = int(header.get("WIDTH", ["0"])[0])
    height = int(header.get("HEIGHT", ["1"])[0])
    points = int(header["POINTS"][0]) if "POINTS" in header else width * height
    if not all(axis in fields for axis in "xyz"):
        raise MSDTError(f"'{path.name}': PCD has no x, y, z fields ({fields}).")
    kinds = {"F": "f", "I": "i", "U": "u"}
    try:
        dtypes = [np.dtype(f"<{kinds[t]}{s}") for t, s in zip(types, sizes, strict=True)]
    except (KeyError, TypeError):
        raise MSDTError(f"'{path.name}': unsupported PCD TYPE/SIZE {types}/{sizes}.") from None
    return {"fields": fields, "dtypes": dtypes, "counts": counts, "points": points,
            "data": header["DATA"][0].lower()}


def _read_pcd(path: Path) -> np.ndarray:
    with open(path, "rb") as handle:
        header = _parse_pcd_header(handle, path)
        body = handle.read()
    fields, dtypes, counts, n = header["fields"], header["dtypes"], header["counts"], header["points"]
    # column offset of each field in a flattened row (COUNT > 1 fields span several columns)
    starts = np.concatenate([[0], np.cumsum(counts)])
    columns = [int(starts[fields.index(a)]) for a in "xyz"]
    if header["data"] == "ascii":
        rows = [line.split() for line in body.decode("ascii", errors="replace").splitlines() if line.strip()]
        if len(rows) < n:
            raise MSDTError(f"'{path.name}': PCD announces {n} points but holds {len(rows)}.")
        table = np.array(rows[:n], dtype=float) if n else np.zeros((0, int(starts[-1])))
        return table[:, columns]
    record = np.dtype([(f"f{i}", d, (c,)) if c > 1 else (f"f{i}", d)
                       for i, (d, c) in enumerate(zip(dtypes, counts, strict=True))])
    if header["data"] == "binary":
        if len(body) < record.itemsize * n:
            raise MSDTError(f"'{path.name}': binary PCD is truncated ({n} points announced).")
        table = np.frombuffer(body, dtype=record, count=n)
        return np.column_stack([np.asarray(table[f"f{fields.index(a)}"], dtype=float).reshape(n, -1)[:, 0]
                                for a in "xyz"])
    if header["data"] == "binary_compressed":
        if len(body) < 8:
            raise MSDTError(f"'{path.name}': binary_compressed PCD is truncated.")
        compressed, uncompressed = np.frombuffer(body[:8], dtype="<u4")
        raw = lzf_decompress(body[8:8 + int(compressed)], int(uncompressed))
        # binary_compressed stores the fields one after the other (all x, then all y, ...)
        out, offset = {}, 0
        for name, dtype, count in zip(fields, dtypes, counts, strict=True):
            size = dtype.itemsize * count * n
            if name in ("x", "y", "z"):
                out[name] = np.frombuffer(raw[offset:offset + size], dtype=dtype).reshape(n, count)[:, 0]
            offset += size
        return np.column_stack([out[a].astype(float) for a in "xyz"])
    raise MSDTError(f"'{path.name}': unknown PCD DATA type '{header['data']}'.")


def lzf_decompress(data: bytes, expected_size: int) -> bytes:
    """LZF (liblzf) decompression, the codec of PCD ``binary_compressed`` files."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        control = data[i]
        i += 1
        if control < 32:  # literal run of control + 1 bytes
            length = control + 1
            if i + length > n:
                raise MSDTError("Corrupt LZF data (literal run past the end).")
            out += data[i:i + length]
            i += length
        else:  # back reference
            length = control >> 5
            if length == 7:
                length += data[i]
                i += 1
            offset = len(out) - ((control & 0x1F) << 8) - data[i] - 1
            i += 1
            if offset < 0:
                raise MSDTError("Corrupt LZF data (back reference before the start).")
            for k in range(length + 2):  # byte by byte: the reference may overlap what it writes
                out.append(out[offset + k])
    if len(out) != expected_size:
        raise MSDTError(f"Corrupt LZF data ({len(out)} bytes decompressed, {expected_size} expected).")
    return bytes(out)


# ------------------------------------------------------------------------------------------- writers

def write_point_cloud(path: str | Path, points, binary: bool = True) -> Path:
    """Write points (mm) to .ply, .pcd (binary, or ascii with ``binary=False``), .xyz/.txt/.csv or .npy."""
    path = Path(path)
    points = as_points(points)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(points)
    if suffix == ".npy":
        np.save(path, points)
    elif suffix in (".xyz", ".txt", ".pts"):
        np.savetxt(path, points, fmt="%.6f")
    elif suffix == ".csv":
        np.savetxt(path, points, fmt="%.6f", delimiter=",", header="x,y,z", comments="")
    elif suffix == ".ply":
        fmt = "binary_little_endian" if binary else "ascii"
        header = (f"ply\nformat {fmt} 1.0\ncomment MSDT point cloud, mm\nelement vertex {n}\n"
                  "property double x\nproperty double y\nproperty double z\nend_header\n")
        with open(path, "wb") as handle:
            handle.write(header.encode("ascii"))
            if binary:
                handle.write(points.astype("<f8").tobytes())
            else:
                np.savetxt(handle, points, fmt="%.6f")
    elif suffix == ".pcd":
        header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z\nSIZE 8 8 8\n"
                  f"TYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\n"
                  f"DATA {'binary' if binary else 'ascii'}\n")
        with open(path, "wb") as handle:
            handle.write(header.encode("ascii"))
            if binary:
                handle.write(points.astype("<f8").tobytes())
            else:
                np.savetxt(handle, points, fmt="%.6f")
    else:
        raise MSDTError(f"Unsupported point cloud format '{suffix}'; use .ply, .pcd, .xyz, .csv or .npy.")
    return path


# ------------------------------------------------------------------------------------------- depth images

def read_depth_image(path: str | Path) -> np.ndarray:
    """A depth image (H, W) from a 16-bit PNG (or any 2D image SimpleITK reads) or an NPY file."""
    path = Path(path)
    if not path.is_file():
        raise MSDTError(f"Depth image '{path}' does not exist.")
    if path.suffix.lower() == ".npy":
        depth = np.load(path, allow_pickle=False)
    else:
        import SimpleITK as sitk

        try:
            depth = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as error:
            raise MSDTError(f"Could not read depth image '{path.name}': {str(error).strip()[:200]}") from None
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise MSDTError(f"Depth image '{path.name}' must be one channel (H, W); got shape {depth.shape}.")
    return depth


def depth_to_points(depth, fx: float, fy: float, cx: float, cy: float, depth_scale_mm: float = 1.0,
                    return_pixels: bool = False):
    """Back-project a depth image into the camera frame (mm): x right, y down, z along the optical axis.

    ``depth`` is an (H, W) array (uint16 raw units, or float) or a .png/.npy path; raw values times
    ``depth_scale_mm`` are millimetres (1.0 for most 16-bit depth cameras, 0.125 for some ToF sensors).
    Zero, negative and non-finite pixels carry no data and give no point. With ``return_pixels`` the
    (row, column) of each point is returned as well.
    """
    if isinstance(depth, (str, Path)):
        depth = read_depth_image(depth)
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise MSDTError(f"A depth image must be 2D (H, W); got shape {depth.shape}.")
    if not (fx > 0 and fy > 0) or depth_scale_mm <= 0:
        raise MSDTError(f"Focal lengths and depth scale must be positive (fx={fx}, fy={fy}, "
                        f"scale={depth_scale_mm}).")
    z = depth.astype(float) * float(depth_scale_mm)
    rows, cols = np.nonzero(np.isfinite(z) & (z > 0))
    if rows.size == 0:
        raise MSDTError("The depth image has no valid pixel (all zero or not finite): no finite points.")
    zz = z[rows, cols]
    points = np.column_stack([(cols - cx) * zz / fx, (rows - cy) * zz / fy, zz])
    return (points, np.column_stack([rows, cols])) if return_pixels else points


# ------------------------------------------------------------------------------------------- filters

def voxel_downsample(points, voxel_mm: float) -> np.ndarray:
    """One point per occupied voxel of size ``voxel_mm``: the mean of the points that fall in it."""
    points = as_points(points)
    if not voxel_mm > 0:
        raise MSDTError(f"Voxel size must be positive (got {voxel_mm}).")
    keys = np.floor((points - points.min(axis=0)) / voxel_mm).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, points)
    return sums / counts[:, None]


def remove_outliers(points, k: int = 16, std_ratio: float = 2.0, return_mask: bool = False):
    """Statistical outlier removal: drop points whose mean distance to their ``k`` nearest neighbours exceeds
    the cloud's mean of that distance by more than ``std_ratio`` standard deviations."""
    points = as_points(points)
    if len(points) <= k:
        mask = np.ones(len(points), bool)
        return (points, mask) if return_mask else points
    distances, _ = cKDTree(points).query(points, k=k + 1, workers=-1)
    mean = distances[:, 1:].mean(axis=1)
    mask = mean <= mean.mean() + std_ratio * mean.std()
    return (points[mask], mask) if return_mask else points[mask]


def estimate_normals(points, k: int = 16, viewpoint=None, consistent: bool = True) -> np.ndarray:
    """Unit normals by PCA of each point's ``k`` nearest neighbours (the direction of least spread).

    Orientation: towards ``viewpoint`` when given (the camera centre, e.g. (0, 0, 0) in the camera frame).
    Otherwise away from the cloud's centroid and, with ``consistent``, propagated along a minimum spanning
    tree of the neighbourhood graph (Hoppe et al. 1992) so neighbouring normals agree.
    """
    points = as_points(points)
    n = len(points)
    if n < 3:
        raise MSDTError(f"Normals need at least 3 points; the cloud has {n}.")
    k = int(min(max(k, 3), n))
    _, neighbours = cKDTree(points).query(points, k=k, workers=-1)
    local = points[neighbours]
    local = local - local.mean(axis=1, keepdims=True)
    covariance = np.einsum("nki,nkj->nij", local, local)
    _, vectors = np.linalg.eigh(covariance)
    normals = vectors[:, :, 0]
    if viewpoint is not None:
        flip = np.einsum("ij,ij->i", normals, np.asarray(viewpoint, float) - points) < 0
        normals[flip] *= -1
        return normals
    centroid = points.mean(axis=0)
    flip = np.einsum("ij,ij->i", normals, points - centroid) < 0
    normals[flip] *= -1
    if consistent and n > 3:
        normals = _propagate_orientation(points, normals, neighbours)
    return normals


def _propagate_orientation(points, normals, neighbours):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree

    n, k = neighbours.shape
    rows = np.repeat(np.arange(n), k - 1)
    cols = neighbours[:, 1:].ravel()
    weights = 1.0 - np.abs(np.einsum("ij,ij->i", normals[rows], normals[cols])) + 1e-6
    graph = coo_matrix((weights, (rows, cols)), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    tree = minimum_spanning_tree(graph)
    tree = tree + tree.T
    _, component = connected_components(tree, directed=False)
    centroid = points.mean(axis=0)
    for label in np.unique(component):
        members = np.flatnonzero(component == label)
        # seed: the member farthest from the centroid, whose normal surely points outwards
        seed = members[np.argmax(np.linalg.norm(points[members] - centroid, axis=1))]
        if normals[seed] @ (points[seed] - centroid) < 0:
            normals[seed] *= -1
        order, predecessors = breadth_first_order(tree, seed, directed=False)
        for node in order[1:]:
            if normals[node] @ normals[predecessors[node]] < 0:
                normals[node] *= -1
    return normals


__all__ = ["as_points", "depth_to_points", "estimate_normals", "lzf_decompress", "read_depth_image",
           "read_point_cloud", "remove_outliers", "voxel_downsample", "write_point_cloud"]
