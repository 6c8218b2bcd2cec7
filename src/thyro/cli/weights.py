"""Commands of the weights area: inspect, add, list, convert and download weight files."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from thyro.cli._help import command, group
from thyro.cli.console import console
from thyro.errors import ConfigError, WeightsError

weights_app = group("Inspect, add and convert weight files (offline; only `download` uses the network).",
                    ["thyro weights inspect weights/radimagenet-resnet18.safetensors",
                     "thyro weights add efficientnet-lite0-57934424.pth --arch efficientnet_lite0",
                     "thyro weights list"])

#: The library's overrides (parameters of ``build_model`` / ``add_weights``) and this command line's flags for them.
FLAGS = {"force": "--force", "unverified": "--unverified", "allow_untrained": "--untrained-ok"}

UNVERIFIED_HELP = ("Use the file even when its mapping by position cannot be verified (its BatchNorm statistics or "
                   "its ImageNet classifier disagree, or there is nothing to check); it is then called unverified "
                   "wherever it is described.")
UNTRAINED_HELP = ("Use the file even when its tensors look untrained (BatchNorm statistics still at mean 0, variance "
                  "1, or a fresh initialisation's kernels); it is then called untrained wherever it is described.")


@contextlib.contextmanager
def _flags_named() -> Iterator[None]:
    """A refusal that an override would let through names this command's flag, not the library's parameter."""
    try:
        yield
    except WeightsError as exc:
        flag = FLAGS.get(getattr(exc, "parameter", None))
        if flag is None:
            raise
        raise WeightsError(f"{exc.reason} To {exc.then}, add {flag}.") from None


@command(weights_app, "inspect", examples=["thyro weights inspect --arch efficientnet_lite0",
                                            "thyro weights inspect weights/radimagenet-resnet18.safetensors",
                                            "thyro weights inspect resnet50.pth --arch resnet50"])
def inspect_cmd(
    file: Optional[Path] = typer.Argument(None, help="Weight file: .pth/.pt/.bin, .safetensors or Keras .h5. Left "
                                                     "out, with --arch: the ImageNet file `weights: imagenet` picks "
                                                     "for that architecture."),
    arch: str = typer.Option(None, "--arch", help="Check coverage for this timm architecture (default: the guess)."),
) -> None:
    """Show a weight file's layout, architecture, coverage, unmatched tensors and the verification of its mapping.

    Nothing is refused here: the verification says what `thyro weights add` or a study would decide, and why.
    """
    from thyro.models.adapter import InputSpec  # lazy: torch and timm, kept off `thyro --help`
    from thyro.models.weights.inspect import inspect_weights  # lazy: torch and timm, kept off `thyro --help`
    from thyro.models.weights.provenance import provenance_line  # lazy: torch and timm, kept off `thyro --help`
    from thyro.models.weights.sources import find_imagenet  # lazy: torch and timm, kept off `thyro --help`

    if file is None:
        if not arch:
            raise ConfigError("Name a weight file, or give --arch ARCH to inspect the ImageNet file `weights: "
                              "imagenet` picks for it.")
        file = find_imagenet(arch)
        console.print(f"the ImageNet file weights: imagenet picks for {arch}: {file}", markup=False, soft_wrap=True)

    info = inspect_weights(file, arch)
    table = Table(show_header=False, title=escape(str(file)))
    table.add_column("what", style="bold")
    table.add_column("value")
    row = lambda k, v: table.add_row(k, escape(str(v)))  # noqa: E731  (file contents are shown as text)
    row("layout", f"{info['format']} ({info['container']}, {info['size_bytes']:,} bytes)")
    row("architecture", info.get("arch_guess") or "unknown (give --arch)")
    match = info.get("match")
    if match is not None:
        row("mapping", match.describe())
        if match.unmatched:
            row("tensors that did not match", f"{len(match.unmatched)}: " + ", ".join(match.unmatched[:8])
                + (" ..." if len(match.unmatched) > 8 else ""))
        if match.left_out:
            row("left out (outside the prefix)", f"{len(match.left_out)}: " + ", ".join(match.left_out[:5])
                + (" ..." if len(match.left_out) > 5 else ""))
    if info.get("near_miss"):
        row("closest", info["near_miss"])
    if info.get("alternatives"):
        row("other candidates", ", ".join(info["alternatives"]))
    if "thyro" in info:
        spec = info["thyro"].get("input_spec")
        row("thyro checkpoint", f"layout {info['thyro'].get('layout')}, thyro {info['thyro'].get('thyro_version')}")
        if spec:
            row("preprocessing", InputSpec.parse(spec).describe())
        if info.get("provenance"):
            row("provenance", provenance_line(info["provenance"]))
    elif info.get("input_spec") is not None:
        row("preprocessing", info["input_spec"].describe())
    if info.get("layout"):
        row("network layout", info["layout"])
    stats = info["stats"]
    row("tensors", f"{stats['tensors']} ({stats['parameters']:,} values; "
        + ", ".join(f"{k} {v}" for k, v in stats["dtypes"].items()) + ")")
    if stats["verdict"]:
        row("BatchNorm statistics", stats["verdict"])
    if info.get("verification") is not None:
        row("verification", info["verification"].line())
    if info.get("bn_check") is not None:
        row("BatchNorm check", info["bn_check"].summary())
    if stats["non_finite"]:
        row("non-finite tensors", ", ".join(stats["non_finite"]))
    if "coverage_error" in info:
        row("coverage", info["coverage_error"])
    console.print(table)
    if "coverage" in info:
        console.print(_load_table(info["coverage"]))


@command(weights_app, "add", examples=["thyro weights add efficientnet-lite0-57934424.pth --arch efficientnet_lite0",
                                        "thyro weights add moco_v2.pth --arch resnet50 --name moco"])
def add_cmd(
    file: Path = typer.Argument(..., help="A checkpoint in any layout thyro recognises (`thyro weights inspect`)."),
    arch: str = typer.Option(..., "--arch", help="The timm architecture it holds, e.g. efficientnet_lite0."),
    name: str = typer.Option("imagenet", "--name",
                             help="Stored as ARCH.NAME; 'imagenet' (the default) is what `weights: imagenet` finds."),
    force: bool = typer.Option(False, "--force", help="Replace an existing entry."),
    unverified: bool = typer.Option(False, "--unverified", help=UNVERIFIED_HELP),
    untrained_ok: bool = typer.Option(False, "--untrained-ok", help=UNTRAINED_HELP),
) -> None:
    """Convert a checkpoint once into thyro's weights folder (timm names, preprocessing and provenance kept).

    The file must cover the whole backbone and look trained, and its mapping must be verified: tensors matched by
    name are; tensors matched by position (efficientnet_pytorch's layout, unknown names) are verified by every
    BatchNorm layer agreeing with its stored statistics on reference images and, where the file has its ImageNet
    classifier, by its answers on photographs (matching efficientnet_pytorch where installed). `thyro weights
    list` shows the evidence. Two adds of one name never both write; an existing entry is replaced only with
    --force. Afterwards `weights: imagenet` (or `{file: PATH}` with the printed path) uses it.
    """
    from thyro.models.add import add_weights  # lazy: torch and timm, kept off `thyro --help`

    with _flags_named():
        out, report, prov = add_weights(file, arch, name=name, force=force, unverified=unverified,
                                        allow_untrained=untrained_ok)
    console.print(_load_table(report))
    console.print(escape(f"added {out}\n  {prov['layout']}; {prov['mapping'] or 'thyro checkpoint'}; "
                         f"coverage {prov['coverage']}; network layout {prov['net_layout']}\n  "
                         f"{prov['verification']['line']}"))


@command(weights_app, "list", examples=["thyro weights list"])
def list_cmd() -> None:
    """List thyro's weights folder ($THYRO_HOME/weights) with each file's provenance.

    The provenance is the source file, its SHA-256, the layout, the coverage and how the mapping was verified, or
    that the weights are unverified or untrained. Leftovers of interrupted adds are removed, never listed.
    """
    from thyro.models.weights.provenance import provenance_line  # lazy: torch and timm, kept off `thyro --help`
    from thyro.models.weights.store import list_stored, weights_dir  # lazy: torch and timm, kept off `thyro --help`

    rows = list_stored()
    if not rows:
        console.print(escape(f"{weights_dir()} holds no weights yet (thyro weights add FILE --arch ARCH)."))
        return
    table = Table(title=escape(str(weights_dir())))
    for col in ("architecture", "name", "layout", "provenance"):
        table.add_column(col)
    for r in rows:
        prov = r.get("error") or (provenance_line(r["provenance"]) if r["provenance"] else "no provenance recorded")
        table.add_row(r["arch"], r["name"], str(r.get("layout")), escape(prov))
    console.print(table)


@command(weights_app, "download", examples=["thyro weights download resnet18"])
def download_cmd(
    arch: str = typer.Argument(..., help="timm architecture, e.g. resnet18 or efficientnet_lite0."),
    tag: str = typer.Option(None, "--tag", help="A pretrained tag of the architecture (default: timm's default)."),
) -> None:
    """Download timm's ImageNet weights into the Hugging Face cache (needs internet; nothing else downloads).

    Without a network it says so within a few seconds, with the folder to copy from a machine that has one.
    """
    from thyro.models.add import download_weights  # lazy: torch and timm, kept off `thyro --help`

    path = download_weights(arch, tag)
    console.print(escape(f"downloaded {path}; `weights: imagenet` with backbone {arch} finds it."))


@command(weights_app, "convert", examples=[
    "thyro weights convert RadImageNet-ResNet50_notop.h5 r50.safetensors --arch resnet50 --source radimagenet"])
def convert_cmd(
    src: Path = typer.Argument(..., help="Weight file in any supported format."),
    out: Path = typer.Argument(..., help="Output .safetensors (backbone + preprocessing metadata)."),
    arch: str = typer.Option(..., "--arch", help="Backbone the weights are for."),
    source: str = typer.Option("file", "--source",
                               help="How to read the file: file, radimagenet (Keras preprocessing) or imagenet."),
    unverified: bool = typer.Option(False, "--unverified", help=UNVERIFIED_HELP),
    untrained_ok: bool = typer.Option(False, "--untrained-ok", help=UNTRAINED_HELP),
) -> None:
    """Convert a weight file to a safetensors backbone that carries its preprocessing, layout and provenance.

    The file is verified as `thyro weights add` verifies it.
    """
    from thyro.models import build_model, save_backbone  # lazy: torch and timm, kept off `thyro --help`
    from thyro.models.weights.provenance import provenance_record  # lazy: torch and timm, kept off `thyro --help`

    if source not in ("file", "radimagenet", "imagenet"):
        raise ConfigError(f"--source must be file, radimagenet or imagenet, got {source!r}.")
    with _flags_named():
        model, report = build_model(arch, f"{source}:{src}", unverified=unverified, allow_untrained=untrained_ok)
    prov = provenance_record(src, report, model, out.stem)
    save_backbone(out, model, metadata={"provenance": prov, "converted_from": src.name,
                                        "source_sha256": prov["source_sha256"], "source_format": report.format})
    console.print(_load_table(report))
    console.print(escape(f"wrote {out} ({model.input_spec.describe()}; layout {model.layout})"))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.add_typer(weights_app, name="weights")


def _load_table(report) -> Table:
    """A :class:`thyro.models.LoadReport` as a table: what loaded, what is missing or unexpected, the verification."""
    table = Table(title=escape(report.summary()), show_lines=False)
    table.add_column("tensors")
    table.add_column("count", justify="right")
    table.add_column("first")
    for what, count, first in report.rows():
        table.add_row(what, count, escape(first))
    return table
