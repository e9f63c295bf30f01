"""The `fibseg` command: a thin argparse layer over the workflow and the library.

    fibseg run [SNAKEMAKE ARGS]          the packaged workflow, with its profiles
    fibseg predict BUNDLE INPUT OUTPUT   one volume segmented with a model bundle, no sheet
    fibseg predict BUNDLE IN... -o DIR   several volumes (--batch FOLDER: all in FOLDER)
    fibseg check SHEET                   every input check of the workflow, no job
    fibseg export-model RESULTS BUNDLE   a bundle from a finished run's results
    fibseg to-annotation SEG OUTPUT      a corrected segmentation as a painted annotation
    fibseg make-prior BUNDLE [--seed N]  the FIB-SEM prior, reproduced from its recipe

Bad input ends with exit code 2 and a message per fault (all of them at once), each naming the
file, what is wrong and the fix (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from ..io.errors import InputError
from ..io.voxel_size import parse_voxel_size
from .prior import add_prior_parser, prior_command

EPILOG = "Details: docs/cli.md in the fibseg repository."


def voxel_size(text: str) -> tuple[float, float, float]:
    """--voxel-size z,y,x in nm (one number: all axes)."""
    try:
        return parse_voxel_size(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fibseg",
        description="Segment FIB-SEM volumes into pore (0) and solid (1) with CNNs.",
        epilog=EPILOG,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="run the packaged workflow (snakemake) with its profiles",
        description="Run fibseg's Snakemake workflow in the working directory: every argument "
        "goes to snakemake (e.g. -n, --configfile my_run.yaml, a target file). The local "
        "profile applies by itself; --profile slurm names the packaged SLURM profile. Without "
        "config/config.yaml in the working directory the packaged one is the base of "
        "--configfile.",
        epilog="Example: fibseg run --configfile my_run.yaml -n. " + EPILOG,
    )
    run.add_argument("snakemake_args", nargs="*", metavar="SNAKEMAKE_ARGS")
    predict = commands.add_parser(
        "predict",
        help="segment volumes with a model bundle (no sheet)",
        usage="%(prog)s [options] BUNDLE INPUT OUTPUT\n"
        "       %(prog)s [options] BUNDLE INPUT... -o DIR [--format tif|h5|ome.zarr]\n"
        "       %(prog)s [options] BUNDLE --batch FOLDER -o DIR [--format tif|h5|ome.zarr]",
        description="Segment volumes (3-D TIFF, folder or glob of 2-D TIFF slices, HDF5 "
        "file.h5:/path, Zarr, MRC) with a model bundle, as the workflow's `pretrained: {bundle}` "
        "route does: the same checks, alignment (config key align), gradient correction, engine "
        "and post-processing. One volume: INPUT OUTPUT. Several: INPUT... -o DIR, or --batch "
        "FOLDER -o DIR for every volume directly inside FOLDER (volume files, .zarr stores, "
        "folders of 2-D TIFF slices; a folder given as INPUT is one volume of slices); the model "
        "is loaded once, each volume goes to DIR/NAME_segmentation.tif (or .h5, .ome.zarr), a "
        "volume that fails is named and the others are still written; exit code 2 if any "
        "failed. The output's ending sets its format: .tif/.tiff (multi-page TIFF) and "
        ".h5/.hdf5 (dataset /segmentation) hold uint8 0 = pore, 1 = solid with the voxel size; "
        ".ome.zarr (napari, Fiji) holds the EM, scores and uncertainty as channels and the label "
        "image 1 = pore, 2 = solid.",
        epilog="Examples: fibseg predict my_model/ film.tif film_segmentation.tif; fibseg "
        "predict my_model/ --batch films/ -o segmented/ --format ome.zarr. " + EPILOG,
    )
    predict.set_defaults(usage_error=predict.error)
    predict.add_argument(
        "bundle",
        metavar="BUNDLE",
        help="a folder from fibseg export-model, or prior (the FIB-SEM prior shipped with fibseg)",
    )
    predict.add_argument(
        "paths",
        nargs="*",
        metavar="INPUT",
        help="the volume, then OUTPUT: its segmentation (.tif, .h5 or .ome.zarr); with -o, "
        "every INPUT is a volume",
    )
    predict.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="DIR",
        help="segment every INPUT (and --batch volume) into DIR/NAME_segmentation.FORMAT",
    )
    predict.add_argument(
        "--batch",
        action="append",
        default=[],
        metavar="FOLDER",
        help="add every volume directly inside FOLDER (repeatable; needs -o)",
    )
    predict.add_argument(
        "--format",
        choices=("tif", "h5", "ome.zarr"),
        help="with -o: tif (default; 0 = pore, 1 = solid), h5 (/segmentation, 0 = pore, "
        "1 = solid) or ome.zarr (labels 1 = pore, 2 = solid)",
    )
    predict.add_argument(
        "--voxel-size",
        type=voxel_size,
        metavar="Z,Y,X",
        help="voxel size in nm (default: from the volume's metadata)",
    )
    predict.add_argument(
        "--aligned", action="store_true", help="the volume is aligned already: skip alignment"
    )
    predict.add_argument(
        "--scores", type=Path, metavar="H5", help="also write the scores (one volume only)"
    )
    predict.add_argument(
        "--write-aligned",
        type=Path,
        metavar="FILE",
        help="also write the aligned volume (.h5 with /volume, or .tif), the segmentation's "
        "frame (one volume only)",
    )
    predict.add_argument(
        "--allow-voxel-size-mismatch",
        action="store_true",
        help="segment a volume whose voxel size differs from the training data's",
    )
    add_config(predict)
    check = commands.add_parser(
        "check",
        help="run every input check of the workflow on a sheet, no job",
        description="Check a data set sheet and the files it names as the workflow does before "
        "any job (config, sheet, pretrained model, voxel sizes, every volume's slices, regions, "
        "labels and annotations), without running a job.",
        epilog="Example: fibseg check my_datasets.tsv --config my_run.yaml. " + EPILOG,
    )
    check.add_argument("sheet", metavar="SHEET", help="the data set sheet (TSV, or .csv)")
    add_config(check)
    export = commands.add_parser(
        "export-model",
        help="write a model bundle from a finished run's results",
        description="Copy the selected model(s), results/postprocess.json and the run's "
        "description (results/model/fibseg-model.json) into a new bundle folder.",
        epilog="Example: fibseg export-model results my_model. " + EPILOG,
    )
    export.add_argument("results", metavar="RESULTS_DIR", help="the run's results/ folder")
    export.add_argument("bundle", metavar="BUNDLE", help="the new bundle folder")
    annotate = commands.add_parser(
        "to-annotation",
        help="turn a corrected segmentation into a painted annotation for training",
        description="Write the painted annotation the sheet's `annotation` column takes (0 "
        "unlabelled, 1 pore, 2 solid) from a segmentation (1 = solid, 0 = pore), corrected or "
        "not, and the corrections painted over it (napari labels: 1 = pore, 2 = solid).",
        epilog="Example: fibseg to-annotation seg.tif --corrected fixes.tif annotation.tif. "
        + EPILOG,
    )
    annotate.add_argument("segmentation", metavar="SEGMENTATION", help="0/1 segmentation")
    annotate.add_argument("output", metavar="OUTPUT", help="the annotation, .tif")
    annotate.add_argument(
        "--corrected", metavar="LABELS", help="painted corrections: 0 none, 1 pore, 2 solid"
    )
    annotate.add_argument(
        "--slices",
        default=None,
        help="slices of the segmentation that become labels: all, corrected, none or 0,4,10-12 "
        "(default: corrected with --corrected, else all)",
    )
    add_prior_parser(commands, EPILOG)
    return parser


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        nargs="+",
        action="extend",
        default=[],
        metavar="YAML",
        help="config overlays on config/config.yaml, as snakemake --configfile",
    )


class WarningFormatter(logging.Formatter):
    """Plain messages; a warning or an error says so first."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{record.levelname}: {text}" if record.levelno >= logging.WARNING else text


def start_logging() -> logging.Logger:
    """fibseg's log lines (progress, summaries) on stderr, one message per line."""
    log = logging.getLogger("fibseg")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(WarningFormatter("%(message)s"))
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.INFO)
    return log


def run_command(args: list[str]) -> int:
    """`fibseg run`: snakemake on the packaged Snakefile, its arguments passed through."""
    from ..pipeline.project import snakemake_command

    return subprocess.call(snakemake_command(args))


def predict_form(args: argparse.Namespace) -> bool:
    """Whether the arguments of `fibseg predict` ask for a batch (-o DIR) or for one volume
    (INPUT OUTPUT); a usage error (exit code 2) for a mix of the two forms."""
    error, paths = args.usage_error, args.paths
    if args.output_dir is None:
        if args.batch:
            error("--batch needs -o/--output-dir DIR, the folder of the segmentations")
        if args.format:
            error("--format goes with -o/--output-dir: OUTPUT's ending sets the format")
        if len(paths) < 2:
            missing = ", ".join(["INPUT", "OUTPUT"][len(paths) :])
            error(f"the following arguments are required: {missing} (or INPUT... -o DIR)")
        if len(paths) > 2:
            error(
                f"{len(paths)} paths after BUNDLE: give INPUT OUTPUT for one volume, or "
                "INPUT... -o DIR to segment every INPUT into DIR"
            )
        return False
    if args.scores or args.write_aligned:
        error("--scores and --write-aligned name one file: use them with INPUT OUTPUT, not -o")
    if not paths and not args.batch:
        error("the following arguments are required: INPUT... or --batch FOLDER")
    return True


def predict_command(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ..inference.pretrained import Pretrained
    from ..pipeline.predict import PredictOutputs, segment_volume
    from ..pipeline.project import load_config

    batch = predict_form(args)
    config = load_config(args.config)
    section = config["pretrained"]
    pretrained = Pretrained.from_config(
        {
            "pretrained": {
                "bundle": args.bundle,
                **{k: section[k] for k in ("voxel_size_tolerance",) if k in section},
                "allow_voxel_size_mismatch": args.allow_voxel_size_mismatch
                or section.get("allow_voxel_size_mismatch", False),
            }
        }
    )
    if batch:
        return predict_batch(args, pretrained, config)
    source, output = args.paths
    outputs = PredictOutputs(Path(output), args.scores, args.write_aligned)
    summary = segment_volume(
        pretrained, source, outputs, config, args.voxel_size, args.aligned, start_logging()
    )
    print(json.dumps(summary))
    return 0


def predict_batch(args: argparse.Namespace, pretrained, config: dict) -> int:
    """`fibseg predict ... -o DIR`: every INPUT and --batch volume into DIR, the model loaded
    once; a JSON summary line per volume on stdout, then the failures: exit code 2 if any."""
    from ..pipeline.batch import batch_jobs, folder_volumes, segment_batch

    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise InputError(
            "the output folder (-o) is a file.",
            file=str(args.output_dir),
            fix="give -o a folder (it is made if it does not exist).",
        )
    inputs = list(args.paths)
    for folder in args.batch:
        inputs += folder_volumes(folder, args.output_dir)
    jobs = batch_jobs(inputs, args.output_dir, args.format or "tif")
    log = start_logging()
    results = []
    for result in segment_batch(pretrained, jobs, config, args.voxel_size, args.aligned, log):
        failure = {"segmentation": str(result.output), "error": result.error}
        print(json.dumps({"input": result.spec, **(result.summary or failure)}), flush=True)
        results.append(result)
    failed = [result for result in results if result.error]
    if failed:
        written = len(results) - len(failed)
        print(
            f"fibseg predict: error: {len(failed)} of {len(results)} volumes failed"
            + (f"; the other {written} are written:" if written else ":"),
            *(f"- {result.spec}: {result.error}" for result in failed),
            sep="\n",
            file=sys.stderr,
        )
        return 2
    log.info("%d volume(s) segmented into %s", len(results), args.output_dir)
    return 0


def check_command(args: argparse.Namespace) -> int:
    from ..pipeline.project import check_project, load_config

    log = start_logging()
    summaries = check_project(load_config(args.config, {"datasets": args.sheet}), log)
    datasets = sum("dataset" in summary for summary in summaries)
    models = f" and {len(summaries) - datasets} model(s)" if len(summaries) > datasets else ""
    log.info("%s: %d data set(s)%s checked, no problem found", args.sheet, datasets, models)
    return 0


def export_command(args: argparse.Namespace) -> int:
    from ..inference.bundle import export_bundle

    bundle = export_bundle(args.results, args.bundle)
    print(f"wrote {bundle.path}: {', '.join(bundle.metadata['models'])}, postprocess.json")
    return 0


def annotation_command(args: argparse.Namespace) -> int:
    from ..annotation.corrected import to_annotation
    from ..io.volume import Volume, read_volume
    from ..io.writers import write_tiff

    if Path(args.output).suffix.lower() not in (".tif", ".tiff"):
        raise InputError(
            "the output is not a TIFF file name.",
            file=args.output,
            fix="name the annotation .tif: the sheet's annotation column takes it.",
        )
    with Volume(args.segmentation) as volume:
        segmentation = volume.read()
        voxel = volume.metadata_voxel_size_nm()
    corrected = read_volume(args.corrected) if args.corrected else None
    slices = args.slices or ("corrected" if args.corrected else "all")
    annotation = to_annotation(
        segmentation, corrected, slices, args.segmentation, args.corrected or ""
    )
    write_tiff(args.output, annotation, voxel if all(voxel) else None)
    counts = {
        name: int((annotation == v).sum()) for v, name in enumerate(("none", "pore", "solid"))
    }
    print(f"wrote {args.output}: labelled voxels {counts}")
    return 0


COMMANDS = {
    "predict": predict_command,
    "make-prior": lambda args: prior_command(args, start_logging()),
    "check": check_command,
    "export-model": export_command,
    "to-annotation": annotation_command,
}


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The command line's arguments. `fibseg predict` takes its paths before, between and
    after its options (argparse alone gives a positional list only the paths before the first
    option)."""
    args, extra = parser.parse_known_args(argv)
    if args.command == "predict":
        unknown = [arg for arg in extra if arg.startswith("-")]
        args.paths = [*args.paths, *(arg for arg in extra if not arg.startswith("-"))]
        extra = unknown
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fibseg` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        if argv[:1] == ["run"] and argv[1:2] not in (["-h"], ["--help"]):
            return run_command(argv[1:])  # every argument is snakemake's
        args = parse(parser, argv)
        return COMMANDS[args.command](args)
    except (InputError, OSError) as error:
        print(f"fibseg {argv[0] if argv else ''}: error: {error}", file=sys.stderr)
        return 2
