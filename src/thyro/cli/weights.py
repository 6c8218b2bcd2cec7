"""Commands of the weights area: ``thyro weights inspect`` and ``thyro weights convert``."""

from __future__ import annotations

from pathlib import Path

import typer

from thyro.cli._help import command, group

weights_app = group("Inspect and convert weight files (offline; nothing is downloaded).",
                    ["thyro weights inspect weights/RadImageNet-ResNet50_notop.h5",
                     "thyro weights convert weights/RadImageNet-ResNet50_notop.h5 weights/radimagenet-r50.safetensors "
                     "--arch resnet50 --source radimagenet"])


@command(weights_app, "inspect", examples=["thyro weights inspect weights/radimagenet-resnet18.safetensors", "thyro weights inspect ~/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth --arch resnet18"])
def inspect_cmd(
    file: Path = typer.Argument(..., help="Weight file: .pth/.pt, .safetensors or Keras .h5."),
    arch: str = typer.Option(None, "--arch", help="Check coverage for this backbone (default: the guessed one)."),
) -> None:
    """Show a weight file's format, architecture guess, coverage for a backbone and tensor statistics."""
    from rich.table import Table

    from thyro.console import console
    from thyro.models.weights.inspect import inspect_weights

    info = inspect_weights(file, arch)
    table = Table(show_header=False, title=str(file))
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("format", f"{info['format']} ({info['container']}, {info['size_bytes']:,} bytes)")
    table.add_row("architecture guess", str(info.get("arch_guess") or "unknown (give --arch)"))
    if "thyro" in info:
        spec = info["thyro"].get("input_spec")
        table.add_row("thyro checkpoint", f"layout {info['thyro'].get('layout')}, thyro {info['thyro'].get('thyro_version')}")
        if spec:
            from thyro.models.adapter import InputSpec

            table.add_row("preprocessing", InputSpec.parse(spec).describe())
    stats = info["stats"]
    table.add_row("tensors", f"{stats['tensors']} ({stats['parameters']:,} values; "
                  + ", ".join(f"{k} {v}" for k, v in stats["dtypes"].items()) + ")")
    if stats["conv_weight_std"] is not None:
        table.add_row("conv weight std", f"{stats['conv_weight_std']:.4g}")
    if stats["verdict"]:
        table.add_row("BatchNorm statistics", stats["verdict"])
    if stats["non_finite"]:
        table.add_row("non-finite tensors", ", ".join(stats["non_finite"]))
    if "coverage_error" in info:
        table.add_row("coverage", info["coverage_error"])
    console.print(table)
    if "coverage" in info:
        console.print(info["coverage"])


@command(weights_app, "convert", examples=["thyro weights convert RadImageNet-ResNet50_notop.h5 radimagenet-r50.safetensors --arch resnet50 --source radimagenet"])
def convert_cmd(
    src: Path = typer.Argument(..., help="Weight file in any supported format."),
    out: Path = typer.Argument(..., help="Output .safetensors (backbone + preprocessing metadata)."),
    arch: str = typer.Option(..., "--arch", help="Backbone the weights are for."),
    source: str = typer.Option("file", "--source",
                               help="How to read the file: file, radimagenet (Keras preprocessing) or imagenet."),
) -> None:
    """Convert a weight file to a safetensors backbone that carries its preprocessing and layout."""
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
    console.print(f"wrote {out} ({model.input_spec.describe()}; layout {model.layout})")


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    app.add_typer(weights_app, name="weights")
