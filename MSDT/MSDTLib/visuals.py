"""Pictures of an Anatomy run: a posterior 3D view of skin, vertebrae and landmarks, and labelled slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer

from . import io, labels, surfaces
from .hierarchy import place_beside

LANDMARK_COLORS = {"centroid": (0.1, 0.3, 0.9), "spinous": (0.85, 0.1, 0.1),
                   "transverse_left": (0.1, 0.65, 0.2), "transverse_right": (0.95, 0.6, 0.05)}


def vertebra_segments(result) -> dict[str, str]:
    """Level -> segment name of every single-vertebra segment of the twin's structures (cranial first)."""
    segmentation = result.structures_segmentation
    names = io.segment_names(segmentation) if segmentation is not None else []
    found = {labels.vertebra_level(name): name for name in names if labels.vertebra_level(name)}
    return dict(sorted(found.items(), key=lambda item: labels.VERTEBRA_ORDER[item[0]]))


def _structure_surfaces(result, render) -> list:
    items = [render.Surface(result.skin_model_node.GetPolyData(), labels.segment_color("skin"), 0.25, "skin")]
    segments = vertebra_segments(result)
    for level, name in segments.items():
        polydata = surfaces.segment_polydata(result.structures_segmentation, name)
        items.append(render.Surface(polydata, labels.segment_color(level), 1.0, level))
    if not segments and result.bone_segmentation is not None:
        items.append(render.Surface(surfaces.segment_polydata(result.bone_segmentation, "bone"),
                                    labels.segment_color("bone"), 1.0, "bone"))
    return items


def _landmark_points(result, render) -> list:
    return [render.Point(point, LANDMARK_COLORS[name], 2.5)
            for vertebra in result.vertebrae for name, point in vertebra.points.items()]


def _vertebra_label_array(result) -> tuple[np.ndarray | None, dict]:
    """Vertebra labels on the volume grid (value = label) and their colours, for slice overlays."""
    if result.structures_segmentation is None or not result.vertebrae:
        return None, {}
    volume = result.volume_node
    array = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.int32)
    colors = {}
    segments = vertebra_segments(result)
    for vertebra in result.vertebrae:
        if vertebra.level in segments:
            array[io.segment_array(result.structures_segmentation, segments[vertebra.level], volume)] = vertebra.label
            colors[vertebra.label] = labels.segment_color(vertebra.level)
    return array, colors


def anatomy_figures(result, out_dir: str | Path, render) -> dict[str, str]:
    """Write the PNG figures of an Anatomy run into ``out_dir``; returns caption -> file name."""
    out_dir = Path(out_dir)
    images = {}
    points = _landmark_points(result, render)
    surfaces_3d = _structure_surfaces(result, render)
    render.render_surfaces(surfaces_3d, out_dir / "view_posterior.png", points=points, view="posterior",
                           title="Posterior view: skin, vertebrae, landmarks")
    images["3D, posterior view (skin translucent; landmarks: blue centroid, red spinous, green/orange TP)"] = \
        "view_posterior.png"
    render.render_surfaces(surfaces_3d, out_dir / "view_left.png", points=points, view="left")
    images["3D, left lateral view"] = "view_left.png"
    volume = slicer.util.arrayFromVolume(result.volume_node)
    ijk_to_ras = io.node_ijk_to_ras(result.volume_node)
    window = (400.0, 1800.0) if result.skin["modality"] == "ct" else None
    label_array, colors = _vertebra_label_array(result)
    if label_array is None:
        label_array = io.segment_array(result.skin_segmentation, "skin", result.volume_node).astype(np.int32)
        colors = {1: labels.segment_color("skin")}
    slice_points = [p for p in points if p.color == LANDMARK_COLORS["spinous"] or p.color == LANDMARK_COLORS[
        "centroid"]]
    for orientation in ("sagittal", "coronal"):
        name = f"slice_{orientation}.png"
        render.render_slice(volume, ijk_to_ras, out_dir / name, labels=label_array, label_colors=colors,
                            orientation=orientation, window=window, points=slice_points,
                            pixel_size_mm=1.0)
        images[f"{orientation.capitalize()} slice with labels"] = name
    return images


def _vertebrae_polydata(result):
    """All vertebra surfaces of the twin appended into one polydata (the bone surface when there are none)."""
    import vtk

    append = vtk.vtkAppendPolyData()
    for name in vertebra_segments(result).values():
        append.AddInputData(surfaces.segment_polydata(result.structures_segmentation, name))
    if append.GetNumberOfInputConnections(0) == 0:
        if result.bone_segmentation is None:
            return None
        append.AddInputData(surfaces.segment_polydata(result.bone_segmentation, "bone"))
    append.Update()
    return append.GetOutput()


TEXTURES = {  # surface: (depth range mm, reducer, colour map) - skin: mean under the skin; bone: cortex peak
    "skin": ((-4.0, 0.0), "mean", "grey"),
    "vertebrae": ((-2.0, 0.0), "max", "iron"),
}


def texture_figures(scene, result, out_dir: Path, pictures: bool = True) -> tuple[dict, list[Path]]:
    """Map grey levels onto the skin and vertebra surfaces, write VTP + coloured PLY (and PNG renders)."""
    from . import render, texture

    out_dir = Path(out_dir)
    models = {"skin": result.skin_model_node}
    vertebrae = _vertebrae_polydata(result)
    if vertebrae is not None:
        models["vertebrae"] = surfaces.model_from_polydata(scene, vertebrae, "Vertebrae surface")
        place_beside(models["vertebrae"], result.skin_model_node, "meso")
    summary, written = {}, []
    for name, model in models.items():
        depth, reducer, colormap = TEXTURES[name]
        stats = texture.texture_model(scene, model, result.volume_node, depth, reducer=reducer, colormap=colormap)
        summary[name] = {"depth_range_mm": list(depth), "reducer": reducer, "mean": round(stats.mean, 1),
                         "min": round(stats.min, 1), "max": round(stats.max, 1), "points": stats.n_points}
        polydata = model.GetPolyData()
        for suffix in ("vtp", "ply"):
            written.append(texture.write_textured(polydata, out_dir / "textures" / f"{name}.{suffix}",
                                                  colormap=colormap))
        if pictures:
            surface = render.Surface(polydata, (1, 1, 1), 1.0, name, scalars=texture.TEXTURE_ARRAY, colormap=colormap)
            written.append(render.render_surfaces([surface], out_dir / f"texture_{name}.png", view="posterior",
                                                  title=f"{name}: {reducer} grey level, depth {depth[0]:g} to "
                                                        f"{depth[1]:g} mm"))
    return summary, written

