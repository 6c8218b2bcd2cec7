"""The web app's API: every endpoint's form fields and answers, described, with one example each.

The answer models describe what ``thyro serve``'s endpoints answer; the app puts them into its OpenAPI
schema (``thyro serve MODEL --openapi`` serves it at ``/openapi.json``) through FastAPI's ``responses=``,
so the endpoints keep answering the dictionaries :class:`thyro.use.serve.service.Service` builds
(nothing is validated or filtered on the way out).  The form models (:class:`PreviewForm`,
:class:`PredictForm`) validate the fields of an upload parsed in memory
(:func:`thyro.use.serve.forms.parse_form`) and document the request body.  docs/serve-api.md shows the
same examples.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from thyro.use.serve.forms import UploadedFile

_PNG = "data:image/png;base64,iVBORw0KGgo..."


class Labels(BaseModel):
    """What label 1 means for this model (from its training data)."""

    source: str = Field(description="how the training labels were obtained: pathology, cytology, tirads, "
                                    "synthetic or unknown", examples=["pathology"])
    definition: str = Field(description="what label 1 means when it is not malignancy (empty: malignant)",
                            examples=[""])
    positive: str = Field(description="the name of class 1 in answers", examples=["malignant"])
    negative: str = Field(description="the name of class 0 in answers", examples=["benign"])
    probability_name: str = Field(description="what the probability is of", examples=["probability of malignant"])
    description: str = Field(description="one sentence for people", examples=["label 1 = malignant (pathology)"])


class Health(BaseModel):
    """``GET /health``: the server is up; which model it serves, and the limits in force."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "status": "ok", "thyro_version": "0.1.0", "format_version": 3, "arch": "resnet18", "n_models": 5,
        "image_size": 224, "operating_point": "youden", "threshold": 0.4127, "max_upload_bytes": 20971520,
        "heatmap_method": "gradcam", "engine": "torch", "heatmaps": True, "heatmap_note": None,
        "max_pixels": 25000000, "max_concurrency": 8, "queue": 16, "max_batch": 8,
        "labels": {"source": "pathology", "definition": "", "positive": "malignant", "negative": "benign",
            "probability_name": "probability of malignant", "description": "label 1 = malignant (pathology)"},
        "metrics": {"test": {"auroc": 0.83, "lower": 0.74, "upper": 0.91}}}})

    status: str = Field(description="always ok when the server answers")
    thyro_version: str = Field(description="thyro's version")
    format_version: Any = Field(description="the model package's format version")
    arch: str | None = Field(description="the backbone architecture")
    n_models: int = Field(description="fold models averaged into each probability")
    image_size: int = Field(description="side of the model's square input, in pixels")
    operating_point: str = Field(description="the operating point that decides the class (youden, sens90, ...)")
    threshold: float = Field(description="the probability at and above which the class is 1")
    max_upload_bytes: int = Field(description="largest upload accepted (413 beyond)")
    heatmap_method: str | None = Field(description="gradcam or gradcam++; null when heatmaps are unavailable")
    engine: str = Field(description="torch or onnx")
    heatmaps: bool = Field(description="whether /predict can draw heatmaps (the torch engine only)")
    heatmap_note: str | None = Field(description="why there are no heatmaps, when there are none")
    max_pixels: int = Field(description="largest image frame decoded, width x height (400 beyond)")
    max_concurrency: int = Field(description="requests worked on at once")
    queue: int = Field(description="requests allowed to wait beyond those (503 with Retry-After beyond)")
    max_batch: int = Field(description="most concurrent requests scored in one model call")
    labels: Labels = Field(description="what label 1 means")
    metrics: dict = Field(description="the package's test metrics (AUROC with its CI, ...), as its model card")


class Preview(BaseModel):
    """``POST /preview``: the upload as read, so the page can show any format (DICOM too)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "width": 800, "height": 600, "image_png": _PNG}})

    width: int = Field(description="image width in pixels")
    height: int = Field(description="image height in pixels")
    image_png: str = Field(description="the image as read (grayscale), as a PNG data URL")


class Prediction(BaseModel):
    """``POST /predict``: the probability, the class at the operating point and, on request, heatmaps."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": {
        "filename": "scan.dcm", "probability": 0.734, "class": 1, "prediction": "malignant", "positive": True,
        "operating_point": "youden", "threshold": 0.4127, "roi": '{"box": [120, 80, 360, 300]}', "warning": None,
        "preprocessed_png": _PNG, "heatmap_png": _PNG, "heatmap_method": "gradcam", "roi_used": True,
        "note": None, "crop_box": [102, 58, 378, 322], "image_size": [800, 600], "heatmap_original_png": _PNG}})

    filename: str | None = Field(description="the uploaded file's name")
    probability: float = Field(description="mean of the fold models' probabilities that label 1 applies, 0 to 1")
    class_: int = Field(alias="class", description="1 when probability >= threshold, else 0")
    prediction: str = Field(description="the class's name (the labels' positive or negative name)")
    positive: bool = Field(description="class == 1")
    operating_point: str = Field(description="the operating point used")
    threshold: float = Field(description="its probability threshold")
    roi: str | None = Field(description="the ROI received, as JSON (image pixels); null when none")
    warning: str | None = Field(description="what to know about this image (upscaled, several frames, no "
                                            "heatmap with the ONNX engine, ...); null when nothing")
    preprocessed_png: str | None = Field(description="the model's input, as a PNG data URL; null unless the "
                                                     "request asked for it (preprocessed=true)")
    heatmap_png: str | None = Field(description="the heatmap on the model's input (inside the image, not on "
                                                "padding), as a PNG data URL; null without heatmap")
    heatmap_method: str | None = Field(description="gradcam or gradcam++; null without heatmap")
    roi_used: bool = Field(description="whether the ROI cropped the image (models trained on ROI crops only)")
    note: str | None = Field(description="why a drawn box was not used, when it was not")
    crop_box: list[int] = Field(description="what the model saw, in the image's pixels: [x0, y0, x1, y1]")
    image_size: list[int] = Field(description="the image's [width, height]")
    heatmap_original_png: str | None = Field(description="the heatmap on the original image inside the crop box, "
                                                         "with a colour bar, as a PNG data URL")


class Problem(BaseModel):
    """An error answer: what is wrong with the request, in one sentence."""

    model_config = ConfigDict(json_schema_extra={"example": {
        "detail": "scan.png: not a readable image (cannot identify image file)."}})

    detail: str = Field(description="what is wrong and, where it helps, what to do")


_FILE = Annotated[UploadedFile, WithJsonSchema({"type": "string", "format": "binary"})]


class PreviewForm(BaseModel):
    """POST /preview's form (multipart/form-data)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="ignore")

    file: _FILE = Field(description="the image: PNG, JPEG, BMP, TIFF or DICOM (multi-frame: frame 0)")


class PredictForm(PreviewForm):
    """POST /predict's form (multipart/form-data)."""

    roi: str | None = Field(None, description='optional ROI in image pixels, JSON: {"box": [x0, y0, x1, y1]} or '
                                              '{"polygons": [[[x, y], ...]]}; used by models trained on ROI crops',
                            examples=['{"box": [120, 80, 360, 300]}'])
    heatmap: bool = Field(True, description="also draw Grad-CAM heatmaps (torch engine; slower)", examples=[True])
    preprocessed: bool = Field(False, description="also return the model's input as a PNG (preprocessed_png, a "
                                                  "large base64 image); off by default", examples=[False])


FORMS = {"preview": PreviewForm, "predict": PredictForm}

#: ``responses=`` of each endpoint: its answer and its errors, each with a description and an example.
_ERRORS = {
    400: {"model": Problem, "description": "the file is not a readable image, or too large in pixels, or the ROI "
                                           "is not valid JSON"},
    408: {"model": Problem, "description": "the request body stopped arriving, or did not arrive in time; the "
                                           "connection is closed"},
    413: {"model": Problem, "description": "the upload is larger than the server's upload limit (max_upload_bytes "
                                           "in /health)"},
    500: {"model": Problem, "description": "the server failed; the detail carries an id under which its log has "
                                           "the details"},
    503: {"model": Problem, "description": "busy: too many requests at work and waiting, or too many uploads "
                                           "arriving; retry after the Retry-After header's seconds"},
}
RESPONSES = {
    "health": {200: {"model": Health, "description": "the server is up"}},
    "preview": {200: {"model": Preview, "description": "the image as read"}, **_ERRORS},
    "predict": {200: {"model": Prediction, "description": "the prediction"}, **_ERRORS},
}
SUMMARIES = {
    "health": ("Server status and model", "Which model is served, its operating point and labels, and the limits "
                                          "in force. Cheap: use it as a liveness check."),
    "preview": ("Read an image", "Decodes the upload (any supported format, DICOM too) and returns it as a PNG, "
                                 "so a page can show it before predicting."),
    "predict": ("Predict malignancy for one image", "Scores the upload with the package's preprocessing and fold "
                                                    "ensemble; with heatmap=true also Grad-CAM heatmaps, with "
                                                    "preprocessed=true the model's input. Concurrent requests are "
                                                    "scored together (the same probabilities as one at a time)."),
}


def endpoint(name: str) -> dict:
    """Keyword arguments for FastAPI's route decorator of endpoint ``name``: summary, description, responses,
    and the form it reads (its request body, parsed by the app rather than by FastAPI)."""
    summary, description = SUMMARIES[name]
    extra = {}
    if name in FORMS:
        schema = FORMS[name].model_json_schema()
        extra = {"openapi_extra": {"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": schema}}}}}
    # response_model=None: the schema comes from RESPONSES alone, and answers are sent as they are built
    return {"summary": summary, "description": description, "responses": RESPONSES[name], "response_model": None,
            **extra}
