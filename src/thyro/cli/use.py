"""Commands of the use area: ``thyro bundle``, ``predict``, ``explain``, ``export``, ``serve``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.markup import escape
from rich.table import Table

from thyro.cli._help import command
from thyro.cli.console import console, err_console, info, is_quiet
from thyro.data.manifest import MAX_ROI_CHARS, parse_roi
from thyro.errors import ConfigError, DataError, ThyroError
from thyro.optional import require

Engine = Literal["torch", "onnx"]
Method = Literal["gradcam", "gradcam++"]
#: The package's ONNX file, where --engine onnx looks by default (thyro.use.package.ONNX_FILE).
ONNX_FILE = "model.onnx"


def parse_roi_arg(value: str | None) -> dict | None:
    """``--roi``: a JSON object (``{"box": [x0, y0, x1, y1]}`` or ``{"polygons": ...}``) or a path to a JSON file."""
    if value is None or not str(value).strip():
        return None
    text = str(value)
    where = "--roi"
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise DataError(f"--roi {text[:200]!r}: neither a JSON object nor an existing JSON file.")
        where = f"--roi {path}"
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read(MAX_ROI_CHARS + 1)  # parse_roi refuses anything longer
        except OSError as exc:
            raise DataError(f"{where}: cannot read the file ({exc.strerror or exc}).") from None
    return parse_roi(text, where=where)


def check_onnx(model_dir: Path, engine: str, onnx_file: Path | None) -> None:
    """``--engine onnx``: onnxruntime installed and the ONNX file there, said in the command line's words."""
    if engine != "onnx":
        return
    require("onnxruntime", purpose="--engine onnx")
    path = onnx_file or model_dir / ONNX_FILE
    if not path.is_file():
        raise ThyroError(f"{path}: ONNX model not found; export it with `thyro export {model_dir}` (which writes "
                         f"MODEL_DIR/{ONNX_FILE}, where --engine onnx looks), or name an exported file with "
                         "--onnx-file.")


def summary_table(summary, max_rows: int = 40) -> Table:
    """A table of a prediction's first rows (:class:`thyro.use.predict.PredictionSummary`) and a caption with
    the counts."""
    table = Table(title=f"Predictions ({summary.engine}; class at operating point {summary.operating_point}, "
                        f"probability >= {summary.threshold:.4f})")
    for col in ("input", "probability", "class", "roi", "note"):
        table.add_column(col, overflow="fold")
    shown = summary.rows[:max_rows]
    base = ""
    try:
        if len(shown) > 1:
            base = os.path.commonpath([os.path.dirname(r.input) for r in shown])
    except ValueError:  # mixed absolute and relative paths
        base = ""
    if base in (os.sep, "."):
        base = ""
    for row in shown:
        name = os.path.relpath(row.input, base) if base else row.input
        table.add_row(escape(name), "" if row.probability is None else f"{row.probability:.4f}",
                      escape(row.prediction), "yes" if row.roi else "", escape(row.error or row.warning),
                      style="red" if row.error else None)
    more = summary.n - len(shown)
    table.caption = escape((f"paths relative to {base}; " if base else "")
                           + f"{summary.n} image(s): {summary.n_positive} {summary.positive}, "
                           f"{summary.n - summary.n_positive - summary.n_failed} {summary.negative}, "
                           f"{summary.n_failed} failed" + (f"; {more} more row(s) in the CSV" if more > 0 else ""))
    return table


def bundle_cmd(
    run_dir: Path = typer.Argument(..., help="Study run directory (from `thyro study`)."),
    arm: Optional[str] = typer.Option(None, "--arm", help="The arm to package (its fold models form the ensemble); "
                                                          "default: the finished arm with the highest out-of-fold "
                                                          "AUROC."),
    out: Path = typer.Option(..., "--out", "-o", help="Model directory to write."),
    point: str = typer.Option("youden", "--point", help="Default operating point: youden, sens90, sens95 or spec90."),
    label_source: str = typer.Option(None, "--label-source",
                                     help="How the labels were obtained, if the study did not record it: pathology, "
                                          "cytology, tirads, synthetic or unknown."),
    label_definition: str = typer.Option(None, "--label-definition",
                                         help="What label 1 means when it is not malignancy, e.g. 'TI-RADS >= 4c'."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model directory."),
) -> None:
    """Turn one arm of a finished study into a model package with a model card."""
    from thyro.use.bundle import bundle  # lazy: the use area loads torch's neighbours; --help stays light

    if out.exists() and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ThyroError(f"{out}: exists and is not empty; choose another --out or pass --overwrite.")
    pkg = bundle(run_dir, arm, out, default_point=point, label_source=label_source, label_definition=label_definition,
                 overwrite=overwrite)
    test = pkg.meta.get("metrics", {}).get("test", {})
    auc = test.get("auroc")
    status = (pkg.meta.get("source") or {}).get("weights_status")
    start = f" from {escape(str(pkg.meta.get('weights')))} weights ({status})" if status else ""
    info(f"model package written to [bold]{escape(str(out))}[/]: {len(pkg.model_files)} fold model(s), "
         f"{pkg.meta.get('arch')} at {pkg.image_size} px{start}, label 1 = {pkg.label_meaning.positive}"
         + (f"; test AUROC {auc:.3f} [{test['lower']:.3f}, {test['upper']:.3f}]" if auc is not None else
            f"; test AUROC {escape(test['missing'])}" if test.get("not_estimable") else "")
         + f"; operating point {point} = {pkg.operating_point(point)[1]:.4f}. See {out / 'MODEL_CARD.md'}.")


def predict_cmd(
    model_dir: Path = typer.Argument(..., help="Model package (from `thyro bundle`)."),
    inputs: list[str] = typer.Argument(..., help="Image files, folders (recursive), DICOM files or manifest CSVs."),
    out: Path = typer.Option(None, "--out", "-o", help="Write the predictions CSV here (default: to standard "
                                                       "output, with the summary on standard error)."),
    roi: str = typer.Option(None, "--roi",
                            help='ROI for every input without one: JSON ({"box": \\[x0,y0,x1,y1]}) or a JSON file.'),
    engine: Engine = typer.Option("torch", "--engine",
                               help="torch (eager) or onnx (MODEL_DIR/model.onnx, from `thyro export`)."),
    onnx_file: Path = typer.Option(None, "--onnx-file",
                                   help="ONNX file for --engine onnx (default MODEL_DIR/model.onnx)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per batch (memory stays bounded)."),
    point: str = typer.Option(None, "--point", help="Operating point for the class (default: the package's)."),
    frames: Literal["first", "all", "mean"] = typer.Option("first", "--frames",
                               help="Multi-frame files (cine DICOM, multi-page TIFF): first (frame 0, with a warning), "
                                    "all (one row per frame, FILE#frame=K) or mean (the frames' mean probability)."),
) -> None:
    """Predict the probability that label 1 applies for images, DICOM files, folders or a manifest, one CSV row each.

    Label 1 is what the model was trained to find: malignant, or e.g. TI-RADS >= 4c for a model trained on
    TI-RADS labels; every row names it (probability_of). Without --out the CSV goes to standard output (so `thyro -q predict ... > predictions.csv` and pipes work)
    and the summary to standard error. Exit code 1 if any file failed (its row holds the error).
    """
    from thyro.use.predict import predict  # lazy: the use area loads torch's neighbours; --help stays light

    check_onnx(model_dir, engine, onnx_file)
    summary = predict(model_dir, inputs, out=out if out else sys.stdout, roi=parse_roi_arg(roi), engine=engine,
                      onnx_path=onnx_file, batch_size=batch_size, point=point,
                      progress=bool(out) and not is_quiet(), frames=frames)
    if not is_quiet():
        (console if out else err_console).print(summary_table(summary))
        if out:
            console.print(f"predictions written to [bold]{escape(str(out))}[/]")
    if summary.n_failed:
        raise typer.Exit(1)


def explain_cmd(
    model_dir: Path = typer.Argument(..., help="Model package (from `thyro bundle`)."),
    inputs: list[str] = typer.Argument(..., help="Image files, folders, DICOM files or manifest CSVs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the heatmap PNGs (and index.csv)."),
    method: Method = typer.Option("gradcam", "--method", help="gradcam or gradcam++."),
    roi: str = typer.Option(None, "--roi", help="ROI for every input without one (JSON or a JSON file)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1,
                                   help="Images scored and explained at a time (one pass per fold model)."),
    frames: Literal["first", "all"] = typer.Option("first", "--frames",
                               help="Multi-frame files: first (frame 0, with a warning) or all (one heatmap "
                                    "per frame)."),
) -> None:
    """Write Grad-CAM / Grad-CAM++ heatmaps of the evidence for label 1 over each image.

    Label 1 is what the model was trained to find: malignant, or e.g. TI-RADS >= 4c for a model trained on
    TI-RADS labels; each caption gives the probability that it applies. Each PNG shows the heatmap on the original image (inside the crop box, not on padding) beside the model's
    input, with a colour bar and the caption below. Exit code 1 if any file failed.
    """
    from thyro.use.explain import explain  # lazy: torch and pytorch-grad-cam; --help stays light

    results = explain(model_dir, inputs, out, method=method, roi=parse_roi_arg(roi), batch_size=batch_size,
                      progress=not is_quiet(), frames=frames)
    failed = [r for r in results if r["error"]]
    info(f"{len(results) - len(failed)} heatmap(s) written to [bold]{escape(str(out))}[/] ({method}); {len(failed)} failed"
         + ("".join(escape(f"\n  {r['input']}: {r['error']}") for r in failed[:20])))
    if failed:
        raise typer.Exit(1)


def export_cmd(
    model_dir: Path = typer.Argument(..., help="Model package (from `thyro bundle`)."),
    onnx: Path = typer.Option(None, "--onnx", help="ONNX file to write (default MODEL_DIR/model.onnx)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest allowed difference from PyTorch on sample inputs "
                                                       "(absolute for probabilities, relative for logits beyond ±1)."),
) -> None:
    """Export the fold ensemble as one ONNX graph, verified against PyTorch on sample inputs.

    The graph takes float32 (batch, 1, S, S) in [0, 1] (the preprocessed image / 255) and returns the fold
    models' mean probability and their logits. Needs the export extra (onnx, onnxruntime).
    """
    from thyro.use.export import export_onnx  # lazy: torch and onnx; --help stays light

    res = export_onnx(model_dir, onnx, opset=opset, tolerance=tolerance)
    console.print(f"ONNX written to [bold]{escape(str(res['path']))}[/] (opset {res['opset']}, {res['n_models']} fold model(s) "
                  f"averaged in one graph, input (batch, 1, {res['image_size']}, {res['image_size']}), dynamic batch); "
                  f"largest difference from PyTorch on sample inputs {res['max_diff']:.2e} (allowed {tolerance:g})")


#: ``thyro serve``'s flags, by the setting each fills (:class:`thyro.use.serve.ServeSettings`), so that a
#: refused setting is named as the user typed it.
SERVE_FLAGS = {"host": "--host", "port": "--port", "token": "--token or THYRO_SERVE_TOKEN", "insecure": "--insecure",
               "engine": "--engine", "onnx_path": "--onnx-file", "method": "--method", "point": "--point",
               "max_upload_bytes": "--max-upload-mb", "max_reading": "--max-reading",
               "max_concurrency": "--max-concurrency", "queue": "--queue", "max_batch": "--max-batch",
               "batch_wait_ms": "--batch-wait-ms", "header_timeout_s": "--header-timeout",
               "body_timeout_s": "--body-timeout", "body_deadline_s": "--body-deadline",
               "max_connections": "--max-connections", "model_threads": "--model-threads", "openapi": "--openapi",
               "log_level": "--log-level"}


def _flag_subject(field: str, value) -> str:
    flag = SERVE_FLAGS.get(field, field).split(" ")[0]
    if field == "token":
        return flag  # never echoed
    if field == "max_upload_bytes":
        return f"{flag} {value / 1024 / 1024:g}" if isinstance(value, (int, float)) else flag
    return f"{flag} {value}"


def serve_cmd(
    model_dir: Path = typer.Argument(..., help="Model package (from `thyro bundle`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; beyond 127.0.0.1 a --token is required "
                                                         "(or --insecure)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", min=0.001,
                                        help="Upload size limit, enforced while the upload streams in (413 beyond)."),
    method: Method = typer.Option("gradcam", "--method", help="Heatmap method: gradcam or gradcam++."),
    engine: Engine = typer.Option("torch", "--engine",
                                  help="torch (heatmaps available) or onnx (MODEL_DIR/model.onnx from `thyro export`; "
                                       "lighter and faster on a CPU, no heatmaps)."),
    onnx_file: Path = typer.Option(None, "--onnx-file",
                                   help="ONNX file for --engine onnx (default MODEL_DIR/model.onnx)."),
    point: str = typer.Option(None, "--point", help="Operating point for the class (default: the package's)."),
    max_concurrency: int = typer.Option(8, "--max-concurrency", min=1,
                                        help="Requests worked on at once (decoding, preprocessing, scoring)."),
    queue: int = typer.Option(16, "--queue", min=0,
                              help="Requests allowed to wait beyond those; more get 503 with Retry-After."),
    max_reading: int = typer.Option(32, "--max-reading", min=1,
                                    help="Request bodies read at once (held in memory); more get 503 with "
                                         "Retry-After."),
    max_batch: int = typer.Option(8, "--max-batch", min=1,
                                  help="Most concurrent requests scored in one model call (1: no micro-batching)."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", min=0.0,
                                        help="How long a batch waits for more requests once it has one."),
    model_threads: int = typer.Option(None, "--model-threads", min=1,
                                      help="The model's threads (default: half the usable cores)."),
    openapi: bool = typer.Option(False, "--openapi", help="Serve the API schema at /openapi.json (no /docs page: "
                                                          "it would load from a CDN)."),
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = typer.Option(
        "info", "--log-level", help="uvicorn's log level (warning: no line per request)."),
    token: str = typer.Option(None, "--token", envvar="THYRO_SERVE_TOKEN", show_envvar=True,
                              help="Access token every request must carry ('Authorization: Bearer TOKEN'; a browser "
                                   "asks for it as the password): printable ASCII, at least 16 characters. Required "
                                   "with a --host beyond 127.0.0.1."),
    insecure: bool = typer.Option(False, "--insecure", help="Serve beyond 127.0.0.1 without a token, on purpose."),
    header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.001,
                                         help="Seconds a connection has to send its request head (then 408)."),
    body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.001,
                                       help="Seconds the server waits for the next part of a request body (then 408)."),
    body_deadline: float = typer.Option(60.0, "--body-deadline", min=0.001,
                                        help="Seconds a request body has to arrive whole (then 408)."),
    max_connections: int = typer.Option(512, "--max-connections", min=1,
                                        help="Connections held at once (uvicorn's limit; 503 beyond)."),
) -> None:
    """A local web page and JSON API (POST /predict, GET /health) for the model.

    The pixel limit for uploaded images is the global `thyro --max-pixels N serve ...`. With --openapi the
    API's schema, with a description and an example of every field, is at /openapi.json. Needs the serve
    extra (fastapi, uvicorn, python-multipart).
    """
    require("fastapi", "uvicorn", "python_multipart|multipart", purpose="thyro serve")
    from thyro.use.serve import ServeSettings, ServeSettingsError, serve  # lazy: the serve extra, for this command only

    try:
        settings = ServeSettings(
            host=host, port=port, token=token, insecure=insecure, engine=engine, onnx_path=onnx_file, method=method,
            point=point, max_upload_bytes=int(max_upload_mb * 1024 * 1024), max_reading=max_reading,
            max_concurrency=max_concurrency, queue=queue, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
            header_timeout_s=header_timeout, body_timeout_s=body_timeout, body_deadline_s=body_deadline,
            max_connections=max_connections, model_threads=model_threads, openapi=openapi, log_level=log_level)
    except ServeSettingsError as exc:
        raise ConfigError(exc.render(SERVE_FLAGS, _flag_subject)) from None
    check_onnx(model_dir, engine, onnx_file)
    serve(model_dir, settings)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main app."""
    command(app, "bundle", examples=["thyro bundle runs/jacr2024 --out model/",
                                     "thyro bundle runs/jacr2024 --arm radimagenet --out model-radimagenet/",
                                     "thyro bundle runs/ddti --arm imagenet --out model-ddti/ --point sens90"])(bundle_cmd)
    command(app, "predict", examples=["thyro predict model/ new_images/ scan.dcm --out predictions.csv",
                                      "thyro -q predict model/ data/site-b/manifest.csv > site-b.csv",
                                      'thyro predict model/ scan.png --roi \'{"box": [120, 80, 360, 300]}\'',
                                      "thyro predict model/ cine.dcm --frames mean --engine onnx"])(predict_cmd)
    command(app, "explain", examples=["thyro explain model/ new_images/ --out heatmaps/",
                                      "thyro explain model/ scan.dcm --out heatmaps/ --method gradcam++"])(explain_cmd)
    command(app, "export", examples=["thyro export model/",
                                     "thyro export model/ --onnx /srv/models/thyro.onnx --opset 18"])(export_cmd)
    command(app, "serve", examples=["thyro serve model/",
                                    "thyro serve model/ --engine onnx --port 8080 --openapi",
                                    "thyro --max-pixels 40000000 serve model/ --max-upload-mb 50"])(serve_cmd)
