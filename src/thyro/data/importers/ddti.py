"""Importer for the Digital Database of Thyroid Images (DDTI) layout.

Layout: ``{case}.xml`` (one per case) and ``{case}_{k}.jpg`` (images 1..n of the case), in one
folder or with the XMLs in a separate folder.  Each XML holds ``<tirads>``, patient and nodule
fields, and ``<mark><image>k</image><svg>JSON</svg></mark>`` entries whose JSON is a list of
``{"points": [{"x": .., "y": ..}, ...], "regionType": "freehand", ...}`` outlines in image pixels.

Labels are the radiologists' TI-RADS categories, not pathology: ``label = 1`` when the category is at
or above ``positive_from`` (default ``4c``: 4c and 5, the categories whose malignancy risk in the
TI-RADS version DDTI uses exceeds 40 %), 0 below it, empty when the case has no category.

What the distributed data holds, and how it is handled (each instance listed as a warning):

* some ``<svg>`` fields are empty, others are cut at 2,500 characters (a database field limit):
  complete outlines before the cut are kept, the cut one is dropped; an image left without any
  outline gets no ROI;
* ``regionType: "arrow"`` entries (2-point pointers, not outlines) are skipped (counted in a note);
* one outline reaches beyond its image (338_2): points are clipped to the image;
* an image without XML is imported unlabelled; an XML without images, and an outline for an image
  that does not exist, are reported.

Structural problems stop the import and are all listed at once: an XML that is not well formed,
a TI-RADS value that is not a category.  ``strict=True`` makes every warning an error too.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from thyro.data.dedup import NEAR_THRESHOLD, natural_key
from thyro.data.importers._common import (
    ImportResult,
    finish_import,
    raise_if,
    refuse_overwrite,
    relative_image_path,
)
from thyro.data.manifest import roi_to_json
from thyro.data.readers import ImageReadError, probe_image
from thyro.errors import ConfigError, DataError

#: TI-RADS categories in increasing order of suspicion (Kwak et al. 2011, the scale DDTI uses).
TIRADS_ORDER = ("1", "2", "3", "4a", "4b", "4c", "5", "6")
POSITIVE_FROM_CHOICES = ("4a", "4b", "4c", "5")
SOURCE_FIELDS = ("tirads", "composition", "echogenicity", "margins", "calcifications", "age", "sex")
_IMAGE_RE = re.compile(r"^(?P<case>.+)_(?P<k>\d+)\.(?:jpe?g|png|bmp|tiff?)$", re.IGNORECASE)


def normalise_tirads(value: str | None) -> str | None:
    """``" 4A "`` -> ``"4a"``; empty -> None; raises ValueError for anything that is not a category."""
    text = re.sub(r"\s+", "", (value or "")).lower()
    if not text:
        return None
    if text not in TIRADS_ORDER:
        raise ValueError(f"<tirads> {value!r} is not a TI-RADS category ({', '.join(TIRADS_ORDER)})")
    return text


def tirads_label(category: str | None, positive_from: str = "4c") -> int | None:
    """1 when ``category`` is at or above ``positive_from``, 0 below, None when unknown."""
    if category is None:
        return None
    return int(TIRADS_ORDER.index(category) >= TIRADS_ORDER.index(positive_from))


def parse_svg(text: str | None) -> tuple[list[list[list[float]]], list[str], int]:
    """Outlines from a DDTI ``<svg>`` field.

    Returns
    -------
    (polygons, problems, n_arrows)
        ``polygons``: lists of ``[x, y]`` (three points or more) from freehand/polygon regions;
        ``problems``: what could not be read (empty field, cut JSON, bad points);
        ``n_arrows``: pointer annotations skipped.
    """
    text = (text or "").strip()
    if not text:
        return [], ["empty <svg> (no outline)"], 0
    problems: list[str] = []
    try:
        regions = json.loads(text)
    except json.JSONDecodeError as exc:
        regions = _salvage_regions(text)
        problems.append(f"<svg> JSON is cut or broken after {len(text)} characters ({exc.msg} at char {exc.pos}); "
                        f"kept {len(regions)} complete outline(s) before the break")
    except RecursionError:  # [[[[... nested beyond Python's recursion limit: not an outline
        return [], ["<svg> JSON is nested too deeply to be an outline"], 0
    if isinstance(regions, dict):
        regions = [regions]
    if not isinstance(regions, list):
        return [], [f"<svg> is not a list of regions but {type(regions).__name__}"], 0
    polygons: list[list[list[float]]] = []
    arrows = 0
    for j, region in enumerate(regions):
        if not isinstance(region, dict) or not isinstance(region.get("points"), list):
            problems.append(f"region {j} has no 'points' list")
            continue
        kind = str(region.get("regionType", "freehand")).lower()
        if kind == "arrow":
            arrows += 1
            continue
        try:
            pts = [[_num(p["x"]), _num(p["y"])] for p in region["points"]]
        except (TypeError, KeyError, ValueError):
            problems.append(f"region {j} has points without numeric x/y")
            continue
        if len(pts) < 3:
            problems.append(f"region {j} ({kind}) has {len(pts)} point(s); an outline needs 3")
            continue
        polygons.append(pts)
    return polygons, problems, arrows


def _num(value) -> float | int:
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError("not finite")
    return int(v) if v.is_integer() else v


def _salvage_regions(text: str) -> list:
    """The complete JSON objects of a ``[{...}, {...}, ...`` array that was cut short."""
    decoder = json.JSONDecoder()
    out: list = []
    pos = text.find("[") + 1
    while pos > 0:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, RecursionError):
            break
        out.append(obj)
    return out


def _read_case(xml_path: Path) -> tuple[dict, dict[int, list], list[str], list[str], int]:
    """Fields, outlines per image number, fatal problems, warnings, arrows of one case XML."""
    fatal: list[str] = []
    warn: list[str] = []
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        return {}, {}, [f"{xml_path.name}: not well-formed XML ({exc})"], [], 0
    fields = {name: (root.findtext(name) or "").strip() for name in SOURCE_FIELDS}
    try:
        fields["tirads"] = normalise_tirads(fields["tirads"]) or ""
    except ValueError as exc:
        fatal.append(f"{xml_path.name}: {exc}")
    number = (root.findtext("number") or "").strip()
    if number and number != xml_path.stem:
        warn.append(f"{xml_path.name}: <number> says {number!r}; the file name {xml_path.stem!r} is used as the case")
    marks: dict[int, list] = {}
    arrows = 0
    for m_i, mark in enumerate(root.findall("mark")):
        k_text = (mark.findtext("image") or "").strip()
        if not k_text.isdigit():
            warn.append(f"{xml_path.name}: <mark> {m_i + 1} has no image number ({k_text!r}); ignored")
            continue
        polys, problems, n_arrows = parse_svg(mark.findtext("svg"))
        arrows += n_arrows
        for p in problems:
            warn.append(f"{xml_path.name}: image {k_text}: {p}")
        marks.setdefault(int(k_text), []).extend(polys)
    return fields, marks, fatal, warn, arrows


def import_ddti(path: str | os.PathLike, out_dir: str | os.PathLike, *, xml_dir: str | os.PathLike | None = None,
                positive_from: str = "4c", near_threshold: int = NEAR_THRESHOLD, strict: bool = False,
                force: bool = False) -> ImportResult:
    """Import a DDTI folder into ``out_dir/manifest.csv`` (images referenced, not copied).

    Parameters
    ----------
    path : path-like
        Folder with the ``{case}_{k}.jpg`` images (and the XMLs, unless ``xml_dir``).
    out_dir : path-like
        Where ``manifest.csv`` and ``import_report.json`` are written.
    xml_dir : path-like, optional
        Folder with the ``{case}.xml`` files when they are not beside the images.
    positive_from : {"4a", "4b", "4c", "5"}
        Lowest TI-RADS category labelled 1.
    near_threshold : int
        pHash Hamming threshold for near duplicates (see :mod:`thyro.data.dedup`).
    strict : bool
        Treat warnings (unreadable outlines, images without XML, ...) as errors.
    force : bool
        Replace an existing ``out_dir/manifest.csv`` (refused otherwise).

    Returns
    -------
    ImportResult

    Raises
    ------
    Problems
        Every XML that is not well formed or holds an unknown TI-RADS value, and every image that
        cannot be decoded, listed together; nothing is written.
    """
    positive_from = str(positive_from).strip().lower()
    if positive_from not in POSITIVE_FROM_CHOICES:
        raise ConfigError(f"positive_from must be one of {', '.join(POSITIVE_FROM_CHOICES)}, got {positive_from!r}")
    image_dir = Path(path)
    xml_folder = Path(xml_dir) if xml_dir is not None else image_dir
    for folder, what in ((image_dir, "image"), (xml_folder, "XML")):
        if not folder.is_dir():
            raise DataError(f"{folder}: DDTI {what} folder not found.")
    refuse_overwrite(out_dir, force=force)
    xml_files, images = _find_files(image_dir, xml_folder)
    out_dir = Path(out_dir)
    found = _Cases()
    for case in sorted(set(xml_files) | set(images), key=natural_key):
        found.add(case, xml_files.get(case), images.get(case, {}), out_dir, positive_from)
    raise_if(found.fatal, f"DDTI import of {image_dir} stopped")
    if strict:
        raise_if(found.warnings, f"DDTI import of {image_dir} stopped (strict: warnings are errors)")
    notes: list[str] = []
    if found.arrows:
        notes.append(f"{found.arrows} arrow annotation(s) (2-point pointers, not outlines) skipped")
    notes.append(f"{found.n_roi} of {len(found.records)} images have an outline (roi); labels: TI-RADS >= "
                 f"{positive_from} -> 1")
    for rec in found.records:  # the labels' meaning travels with the manifest into studies, reports and models
        rec["label_source"], rec["label_definition"] = "tirads", f"TI-RADS ≥ {positive_from}"
    return finish_import(found.records, out_dir, title=f"DDTI import ({len(xml_files)} cases)",
                         warnings=found.warnings, notes=notes, near_threshold=near_threshold,
                         extra_columns=["roi", *SOURCE_FIELDS])


def _find_files(image_dir: Path, xml_folder: Path) -> tuple[dict[str, Path], dict[str, dict[int, Path]]]:
    """``({case: XML}, {case: {k: image}})``; refused when either is empty."""
    xml_files = {p.stem: p for p in xml_folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file()}
    images: dict[str, dict[int, Path]] = {}
    for p in image_dir.iterdir():
        m = _IMAGE_RE.match(p.name)
        if m and p.is_file():
            images.setdefault(m["case"], {})[int(m["k"])] = p
    if not xml_files and not images:
        raise DataError(f"{image_dir}: no DDTI files ({{case}}.xml with {{case}}_{{k}}.jpg) found.")
    if not xml_files:
        raise DataError(f"{xml_folder}: no {{case}}.xml files found; pass xml_dir (--xml-dir) if the XMLs are in "
                        "another folder.")
    if not images:
        raise DataError(f"{image_dir}: no {{case}}_{{k}}.jpg images found beside the XMLs.")
    return xml_files, images


@dataclass
class _Cases:
    """The rows of the cases read so far, and what was found on the way."""

    records: list[dict] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    arrows: int = 0
    n_roi: int = 0

    def add(self, case: str, xml: Path | None, case_images: dict[int, Path], out_dir: Path, positive_from: str
            ) -> None:
        """One case's rows: its images with the XML's fields, label and outlines (unlabelled without XML)."""
        if xml is None:
            for k in sorted(case_images):
                self.warnings.append(f"{case_images[k].name}: no {case}.xml; imported unlabelled without ROI")
                self.records.append(_record(case_images[k], out_dir, case, {}, None, []))
            return
        fields, marks, case_fatal, case_warn, case_arrows = _read_case(xml)
        self.fatal += case_fatal
        self.warnings += case_warn
        self.arrows += case_arrows
        if case_fatal:
            return
        if not case_images:
            self.warnings.append(f"{xml.name}: no images {case}_k.jpg for this case; case skipped")
            return
        for k in sorted(set(marks) - set(case_images)):
            self.warnings.append(f"{xml.name}: outline for image {k} but {case}_{k}.jpg does not exist")
        label = tirads_label(fields.get("tirads") or None, positive_from)
        for k in sorted(case_images):
            polys = marks.get(k, [])
            if polys:
                polys, note = _clip_to_image(polys, case_images[k])
                if note:
                    self.warnings.append(f"{xml.name}: image {k}: {note}")
            self.n_roi += bool(polys)
            self.records.append(_record(case_images[k], out_dir, case, fields, label, polys))


def _clip_to_image(polys: list, image: Path) -> tuple[list, str]:
    """Clip outline points to the image (DDTI has an outline reaching below its image)."""
    try:
        w, h = probe_image(image).size
    except ImageReadError:
        return polys, ""  # reported when the image is hashed
    xs = [p[0] for poly in polys for p in poly]
    ys = [p[1] for poly in polys for p in poly]
    if min(xs) >= 0 and min(ys) >= 0 and max(xs) <= w and max(ys) <= h:
        return polys, ""
    clipped = [[[min(max(x, 0), w), min(max(y, 0), h)] for x, y in poly] for poly in polys]
    return clipped, (f"outline reaches ({min(xs):g}..{max(xs):g}, {min(ys):g}..{max(ys):g}) outside the "
                     f"{w}x{h} image; clipped to the image")


def _record(image: Path, out_dir: Path, case: str, fields: dict, label: int | None, polys: list) -> dict:
    rec = {"image": relative_image_path(image, out_dir), "label": label, "patient_id": case, "group": case,
           "roi": roi_to_json({"polygons": polys}) if polys else ""}
    for name in SOURCE_FIELDS:
        rec[name] = fields.get(name, "")
    return rec
