"""``msdt``: the headless face of MSDT. Each subcommand reads files, writes a scene and a report, and prints a
JSON summary on stdout (logs go to stderr). Bad input exits with code 2 and writes nothing."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from .errors import MSDTError
from .outputs import staged_output
from .tissue import CT_BONE_THRESHOLD_HU

log = logging.getLogger("msdt")
EXIT_BAD_INPUT = 2
# Other Libs add their subcommands through ``add_commands(subparsers)``; each sets ``handler`` (args -> summary).
EXTENSION_COMMANDS = ("MSDTFusionLib.commands", "MSDTMotionLib.commands", "MSDTInferenceLib.commands")
SAMPLE_DIR = Path(__file__).resolve().parents[2] / "Testing" / "Data" / "totalsegmentator_ct_mr_spine"


def _add_segment_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--modality", choices=("ct", "mr"), default="ct", help="image modality (default ct)")
    parser.add_argument("--label-names", help="label name table: 'total', 'total_mr', or a JSON/text file")
    parser.add_argument("--skin-threshold", type=float, help="skin threshold (HU for CT; default -500 / Otsu)")
    parser.add_argument("--bone-threshold", type=float, default=CT_BONE_THRESHOLD_HU,
                        help="lowest HU of bone (hysteresis from cortical bone at 300 HU)")
    parser.add_argument("--formats", default="stl", help="surface formats, comma separated: stl,obj")
    parser.add_argument("--coordinates", choices=("RAS", "LPS"), default="RAS", help="surface coordinates")
    parser.add_argument("--totalsegmentator", action="store_true",
                        help="run TotalSegmentator when no --labels is given (needs msdt[ml] and its weights)")
    parser.add_argument("--no-report", action="store_true", help="skip the PNG renders and report.html")
    parser.add_argument("--out", required=True, type=Path, help="output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msdt", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    segment = commands.add_parser("segment", help="skin, bone, structures and vertebra landmarks of a CT/MR")
    segment.add_argument("image", type=Path, help="NIfTI/NRRD/MHA file or DICOM series folder")
    segment.add_argument("--labels", type=Path, help="label map (e.g. TotalSegmentator multilabel output)")
    _add_segment_arguments(segment)
    spine = commands.add_parser("spine", help="Cobb, lordosis, body and disc heights, bone density, textures")
    spine.add_argument("image", type=Path, help="NIfTI/NRRD/MHA file or DICOM series folder")
    spine.add_argument("--labels", type=Path, required=True, help="vertebra label map (TotalSegmentator 'total' ids)")
    spine.add_argument("--modality", choices=("ct", "mr"), default="ct", help="image modality (default ct)")
    spine.add_argument("--label-names", help="label name table: 'total', 'total_mr', or a JSON/text file")
    spine.add_argument("--sphere-radius-mm", type=float, default=8.0, help="bone-density sphere radius (mm)")
    spine.add_argument("--no-report", action="store_true", help="skip the pictures and report.html")
    spine.add_argument("--out", required=True, type=Path, help="output folder")
    demo = commands.add_parser("demo", help="run 'segment' and 'spine' on the bundled sample CT (report.html, "
                                            "spine/report.html)")
    demo.add_argument("--out", type=Path, default=Path("build/demo"), help="output folder (default build/demo)")
    for name in EXTENSION_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:  # an optional Lib (or its dependency) is not installed
            log.debug("msdt: %s not available (%s)", name, error)
            continue
        module.add_commands(commands)
    return parser


def _finish(summary: dict, staging: Path, written: list[Path]) -> dict:
    """List the written files in the summary and write summary.json."""
    summary["files"] = sorted(str(p.relative_to(staging)) for p in written) + ["summary.json"]
    (staging / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _anatomy(scene, image, labels, modality="ct", label_names=None, skin_threshold=None,
             bone_threshold=CT_BONE_THRESHOLD_HU, totalsegmentator=False):
    from . import pipeline

    options = pipeline.AnatomyOptions(modality=modality, skin_threshold=skin_threshold,
                                      bone_threshold_hu=bone_threshold, label_names=label_names,
                                      use_totalsegmentator=totalsegmentator)
    volume = pipeline.load_inputs(scene, image, labels, options)
    return volume, pipeline.build_anatomy_twin(scene, volume, str(labels) if labels else None, options)


def run_segment(image: Path, labels: Path | None, out: Path, modality="ct", label_names=None,
                skin_threshold=None, bone_threshold=CT_BONE_THRESHOLD_HU, formats="stl", coordinates="RAS",
                totalsegmentator=False, report=True) -> dict:
    """Build the anatomy twin and write scene.mrb, surfaces, summary.json (and report.html) into ``out``."""
    from . import io, surfaces
    from .app import new_scene

    with staged_output(out) as staging:
        scene = new_scene()
        _, result = _anatomy(scene, image, labels, modality, label_names, skin_threshold, bone_threshold,
                             totalsegmentator)
        summary = result.summary()
        written = []
        for segmentation in result.segmentation_nodes():
            written += surfaces.export_segments(segmentation, staging / "surfaces",
                                                [f.strip() for f in formats.split(",") if f.strip()],
                                                coordinates)
        written.append(io.save_mrb(scene, staging / "scene.mrb"))
        if report:
            written += _write_report(result, staging, summary)
        return _finish(summary, staging, written)


def run_spine(image: Path, labels: Path, out: Path, modality="ct", label_names=None, sphere_radius_mm=8.0,
              report=True) -> dict:
    """Anatomy twin plus spine characterisation and texture maps; writes scene.mrb, summary.json, the
    textured surfaces (VTP, coloured PLY), the spine chart and report.html into ``out``."""
    from . import io, spinereport, spineworkflow
    from .app import new_scene
    from .visuals import texture_figures

    if labels is None:
        raise MSDTError("msdt spine needs a vertebra label map (--labels).")
    with staged_output(out) as staging:
        scene = new_scene()
        volume, anatomy = _anatomy(scene, image, labels, modality, label_names)
        options = spineworkflow.SpineOptions(modality=modality, sphere_radius_mm=sphere_radius_mm,
                                             label_names=label_names)
        result = spineworkflow.characterise_spine(scene, volume, str(labels), options)
        summary = dict(result.summary)
        summary["anatomy"] = {key: value for key, value in anatomy.summary().items() if key in ("skin", "bone")}
        textures, written = texture_figures(scene, anatomy, staging, report)
        summary["texture"] = textures
        written.append(io.save_mrb(scene, staging / "scene.mrb"))
        if report:
            images = {"Spine chart": spinereport.spine_chart(summary, result.bodies, staging / "spine_chart.png").name}
            images.update({caption: path.name for caption, path in written_pictures(written)})
            written += [staging / "spine_chart.png",
                        spinereport.write_spine_report(staging, summary, images,
                                                       f"MSDT spine: {volume.GetName()}")]
        return _finish(summary, staging, written)


def written_pictures(written: list[Path]):
    """(caption, path) of the texture renders among the written files."""
    return [(f"Texture: {p.stem.replace('texture_', '').replace('_', ' ')}", p) for p in written
            if p.suffix == ".png" and p.stem.startswith("texture_")]


def _write_report(result, out: Path, summary: dict) -> list[Path]:
    """Renders (posterior 3D view, sagittal and coronal slices with labels) and report.html."""
    from . import render
    from .report import write_anatomy_report
    from .visuals import anatomy_figures

    images = anatomy_figures(result, out, render)
    page = write_anatomy_report(out, summary, images, f"MSDT anatomy: {result.volume_node.GetName()}")
    return [out / name for name in images.values()] + [page]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(message)s")
    try:
        if args.command == "demo":
            image, labels = SAMPLE_DIR / "example_ct.nii.gz", SAMPLE_DIR / "spine_report" / "totalseg.nii.gz"
            if not image.exists():
                raise MSDTError(f"The bundled sample is not at '{SAMPLE_DIR}' (run the demo from a source checkout).")
            summary = run_segment(image, labels, args.out, formats="stl,obj")
            summary["spine"] = run_spine(image, labels, Path(args.out) / "spine")
            log.info("Anatomy report: %s", (args.out / "report.html").resolve())
            log.info("Spine report:   %s", (args.out / "spine" / "report.html").resolve())
        elif hasattr(args, "handler"):
            summary = args.handler(args)
        elif args.command == "spine":
            summary = run_spine(args.image, args.labels, args.out, args.modality, args.label_names,
                                args.sphere_radius_mm, not args.no_report)
        else:
            summary = run_segment(args.image, args.labels, args.out, args.modality, args.label_names,
                                  args.skin_threshold, args.bone_threshold, args.formats, args.coordinates,
                                  args.totalsegmentator, not args.no_report)
    except MSDTError as error:
        print(f"msdt: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
