"""Commands of the weights area: inspect, add, list, convert and download weight files."""

from __future__ import annotations

from pathlib import Path

import typer

weights_app = typer.Typer(help="Inspect, add and convert weight files (offline; only `download` uses the network).",
                          no_args_is_help=True)


@weights_app.command("inspect")
def inspect_cmd(
    file: Path = typer.Argument(..., help="Weight file: .pth/.pt/.bin, .safetensors or Keras .h5."),
    arch: str = typer.Option(None, "--arch", help="Check coverage for this timm architecture (default: the guess)."),
) -> None:
    """Show a weight file's layout, the architecture it fits, coverage, unmatched tensors and the BatchNorm check.

    Example: thyro weights inspect efficientnet-lite0-57934424.pth
    """
    from rich.markup import escape
    from rich.table import Table

    from thyro.console import console
    from thyro.models.adapter import InputSpec
    from thyro.models.weights.inspect import inspect_weights

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
            from thyro.models.weights.store import provenance_text

            row("provenance", provenance_text(info["provenance"]))
    elif info.get("input_spec") is not None:
        row("preprocessing", info["input_spec"].describe())
    if info.get("layout"):
        row("network layout", info["layout"])
    stats = info["stats"]
    row("tensors", f"{stats['tensors']} ({stats['parameters']:,} values; "
        + ", ".join(f"{k} {v}" for k, v in stats["dtypes"].items()) + ")")
    if stats["verdict"]:
        row("BatchNorm statistics", stats["verdict"])
    if info.get("bn_check") is not None:
        row("BatchNorm check", info["bn_check"].summary())
    if stats["non_finite"]:
        row("non-finite tensors", ", ".join(stats["non_finite"]))
    if "coverage_error" in info:
        row("coverage", info["coverage_error"])
    console.print(table)
    if "coverage" in info:
        console.print(info["coverage"])


@weights_app.command("add")
def add_cmd(
    file: Path = typer.Argument(..., help="A checkpoint in any layout thyro recognises (`thyro weights inspect`)."),
    arch: str = typer.Option(..., "--arch", help="The timm architecture it holds, e.g. efficientnet_lite0."),
    name: str = typer.Option("imagenet", "--name",
                             help="Stored as ARCH.NAME; 'imagenet' (the default) is what `weights: imagenet` finds."),
    force: bool = typer.Option(False, "--force", help="Replace an existing entry."),
) -> None:
    """Convert a checkpoint once into thyro's weights folder (timm names, preprocessing and provenance kept).

    Afterwards `weights: imagenet` (or `{file: PATH}` with the printed path) uses it.

    Example: thyro weights add efficientnet-lite0-57934424.pth --arch efficientnet_lite0
    """
    from rich.markup import escape

    from thyro.console import console
    from thyro.models.add import add_weights

    out, report, prov = add_weights(file, arch, name=name, force=force)
    console.print(report)
    console.print(escape(f"added {out}\n  {prov['layout']}; {prov['mapping'] or 'thyro checkpoint'}; "
                         f"coverage {prov['coverage']}; network layout {prov['net_layout']}\n  {prov['bn_check']}"))


@weights_app.command("list")
def list_cmd() -> None:
    """List thyro's weights folder ($THYRO_HOME/weights) with each file's provenance.

    Example: thyro weights list
    """
    from rich.markup import escape
    from rich.table import Table

    from thyro.console import console
    from thyro.models.weights.store import list_stored, provenance_text, weights_dir

    rows = list_stored()
    if not rows:
        console.print(escape(f"{weights_dir()} holds no weights yet (thyro weights add FILE --arch ARCH)."))
        return
    table = Table(title=escape(str(weights_dir())))
    for col in ("architecture", "name", "layout", "provenance"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["arch"], r["name"], str(r.get("layout")), escape(r.get("error") or provenance_text(r["provenance"])))
    console.print(table)


@weights_app.command("download")
def download_cmd(
    arch: str = typer.Argument(..., help="timm architecture, e.g. resnet18 or efficientnet_lite0."),
    tag: str = typer.Option(None, "--tag", help="A pretrained tag of the architecture (default: timm's default)."),
) -> None:
    """Download timm's ImageNet weights into the Hugging Face cache (needs internet; nothing else downloads).

    Example: thyro weights download resnet18
    """
    from rich.markup import escape

    from thyro.console import console
    from thyro.models.add import download_weights

    path = download_weights(arch, tag)
    console.print(escape(f"downloaded {path}; `weights: imagenet` with backbone {arch} finds it."))


@weights_app.command("convert")
def convert_cmd(
    src: Path = typer.Argument(..., help="Weight file in any supported format."),
    out: Path = typer.Argument(..., help="Output .safetensors (backbone + preprocessing metadata)."),
    arch: str = typer.Option(..., "--arch", help="Backbone the weights are for."),
    source: str = typer.Option("file", "--source",
                               help="How to read the file: file, radimagenet (Keras preprocessing) or imagenet."),
) -> None:
    """Convert a weight file to a safetensors backbone that carries its preprocessing and layout.

    Example: thyro weights convert RadImageNet-ResNet50_notop.h5 r50.safetensors --arch resnet50 --source radimagenet
    """
    from rich.markup import escape

    from thyro.console import console
    from thyro.errors import ConfigError
    from thyro.fileio import sha256_file
    from thyro.models import build_model, save_backbone

    if source not in ("file", "radimagenet", "imagenet"):
        raise ConfigError(f"--source must be file, radimagenet or imagenet, got {source!r}.")
    model, report = build_model(arch, f"{source}:{src}")
    save_backbone(out, model, metadata={"converted_from": src.name, "source_sha256": sha256_file(src),
                                        "source_format": report.format})
    console.print(report)
    console.print(escape(f"wrote {out} ({model.input_spec.describe()}; layout {model.layout})"))


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.add_typer(weights_app, name="weights")
