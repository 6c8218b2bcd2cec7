"""The web app's API is documented: every endpoint and field described, one example each, matching the answers."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from thyro.use.serve import create_app  # noqa: E402
from thyro.use.serve import schema as serve_api  # noqa: E402


@pytest.fixture(scope="module")
def documented(model_dir):
    app = create_app(model_dir, openapi=True)
    with TestClient(app) as client:
        yield client, client.get("/openapi.json").json()


def _fields(model) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def test_every_endpoint_has_a_summary_a_description_and_documented_answers(documented):
    _, spec = documented
    schemas = spec["components"]["schemas"]
    routes = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == {("/health", "get"), ("/preview", "post"), ("/predict", "post")}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and len(op["description"]) > 40, path
            ok = op["responses"]["200"]
            name = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            component = schemas[name]
            assert component.get("example"), f"{path}: no example"
            example, props = component["example"], component["properties"]
            absent = set(props) - set(example)  # the schema leaves out an example's null values
            assert set(example) <= set(props) and all(
                {"type": "null"} in props[k].get("anyOf", []) for k in absent), name
            for field, prop in component["properties"].items():
                assert prop.get("description"), f"{name}.{field}"
            if method == "post":
                assert {"400", "413", "503"} <= set(op["responses"])
    for path, fields in (("/preview", {"file"}), ("/predict", {"file", "roi", "heatmap", "preprocessed"})):
        form = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        body = form["properties"]
        assert set(body) == fields and form["required"] == ["file"], path
        assert all(p.get("description") for p in body.values()), path
        assert body["file"]["format"] == "binary"
    assert body["roi"]["examples"] == ['{"box": [120, 80, 360, 300]}']
    assert body["preprocessed"]["default"] is False and "preprocessed_png" in body["preprocessed"]["description"]


def test_the_documented_fields_are_the_fields_the_app_answers(documented, images):
    client, _ = documented
    assert set(client.get("/health").json()) == _fields(serve_api.Health)
    with open(images["png0"], "rb") as fh:
        got = client.post("/predict", files={"file": ("us0.png", fh, "image/png")},
                          data={"roi": '{"box": [10, 10, 80, 70]}'}).json()
    assert set(got) == _fields(serve_api.Prediction)
    assert got["preprocessed_png"] is None  # only when asked for
    with open(images["png0"], "rb") as fh:
        assert set(client.post("/preview", files={"file": ("us0.png", fh, "image/png")}).json()) == _fields(
            serve_api.Preview)
    with open(images["not_image"], "rb") as fh:
        bad = client.post("/predict", files={"file": ("notes.png", fh, "image/png")})
    assert bad.status_code == 400 and set(bad.json()) == _fields(serve_api.Problem)


def test_without_openapi_there_is_no_schema(model_dir):
    with TestClient(create_app(model_dir)) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/docs").status_code == 404


def test_a_form_without_its_file_gets_fastapis_validation_answer(documented, images):
    client, _ = documented
    png = images["png0"].read_bytes()
    for files, data in (({}, {}), ({"image": ("us0.png", png)}, {"heatmap": "false"}),
                        ({"file": ("us0.png", png)}, {"heatmap": "perhaps"})):
        r = client.post("/predict", files=files, data=data)
        assert r.status_code == 422, r.text
        (problem,) = r.json()["detail"]
        assert problem["loc"][0] == "body" and problem["loc"][1] in ("file", "heatmap")
    assert "a file (us0.png)" in client.post("/predict", files={"image": ("us0.png", png)}).text
