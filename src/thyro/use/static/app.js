"use strict";
// The page of `thyro serve`: choose an image, optionally draw a box, ask /predict, show the result.
(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  let file = null, image = null, scale = 1, box = null, drag = null;

  function show(id, on) { $(id).hidden = !on; }
  function status(text) { $("status").textContent = text; }
  function fail(text) { $("error").textContent = text; show("error", true); status("Something went wrong."); }

  fetch("/health").then((r) => r.json()).then((h) => {
    if (h.labels) {  // what the model learnt: "malignancy probability" or e.g. "TI-RADS >= 4c probability"
      $("probability-name").textContent = h.labels.probability_name;
      $("labels").textContent = `what the model predicts: ${h.labels.summary || h.labels.positive}. ${h.labels.description || ""}`;
      $("heatmap-caption").textContent = `heatmap (Grad-CAM) on the original image, inside the crop box (yellow): where the evidence for ${h.labels.positive} lies`;
    }
    $("model").textContent = `model: ${h.arch || "?"}, ${h.n_models} fold model(s), input ${h.image_size} px; ` +
      `operating point ${h.operating_point} (probability >= ${h.threshold.toFixed(3)}); upload limit ${(h.max_upload_bytes / 1048576).toFixed(0)} MB`;
  }).catch(() => { $("model").textContent = "model information unavailable"; });

  function draw() {
    if (!image) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
    const b = drag || box;
    if (b) {
      ctx.strokeStyle = "#ffd400"; ctx.lineWidth = 2;
      ctx.strokeRect(b[0] * scale, b[1] * scale, (b[2] - b[0]) * scale, (b[3] - b[1]) * scale);
    }
    $("box").textContent = box ? `box (image pixels): [${box.map((v) => Math.round(v)).join(", ")}]` : "no box: the whole image is used";
    $("clear").disabled = !box;
  }

  async function choose(f) {
    file = f; box = null; image = null; show("error", false); show("result", false);
    $("predict").disabled = true;
    status(`Reading ${f.name}…`);
    const form = new FormData(); form.append("file", f);
    try {
      const r = await fetch("/preview", { method: "POST", body: form });
      const j = await r.json();
      if (!r.ok) { fail(j.detail || `error ${r.status}`); return; }
      const img = new Image();
      img.onload = () => {
        image = img;
        const maxW = 480, maxH = 360;
        scale = Math.min(maxW / j.width, maxH / j.height, 4);
        canvas.width = Math.round(j.width * scale); canvas.height = Math.round(j.height * scale);
        draw();
        $("predict").disabled = false;
        status(`${f.name}: ${j.width} x ${j.height} px. Draw a box (optional), then Predict.`);
      };
      img.src = j.image_png;
    } catch (e) { fail(String(e)); }
  }

  function pos(ev) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) * (canvas.width / r.width) / scale;
    const y = (ev.clientY - r.top) * (canvas.height / r.height) / scale;
    return [Math.max(0, Math.min(x, canvas.width / scale)), Math.max(0, Math.min(y, canvas.height / scale))];
  }
  canvas.addEventListener("mousedown", (ev) => { if (!image) return; const p = pos(ev); drag = [p[0], p[1], p[0], p[1]]; drag.start = p; });
  canvas.addEventListener("mousemove", (ev) => {
    if (!drag) return; const p = pos(ev), s = drag.start;
    drag = [Math.min(s[0], p[0]), Math.min(s[1], p[1]), Math.max(s[0], p[0]), Math.max(s[1], p[1])]; drag.start = s; draw();
  });
  window.addEventListener("mouseup", () => {
    if (!drag) return;
    if (drag[2] - drag[0] >= 4 && drag[3] - drag[1] >= 4) box = [drag[0], drag[1], drag[2], drag[3]].map((v) => Math.round(v));
    drag = null; draw();
  });
  $("clear").addEventListener("click", () => { box = null; draw(); });

  $("file").addEventListener("change", (ev) => { if (ev.target.files.length) choose(ev.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files.length) choose(ev.dataTransfer.files[0]);
  });

  $("predict").addEventListener("click", async () => {
    if (!file) return;
    $("predict").disabled = true; show("error", false); status("Predicting…");
    const form = new FormData(); form.append("file", file);
    if (box) form.append("roi", JSON.stringify({ box: box }));
    form.append("preprocessed", "true"); // the page shows the model's input beside the heatmaps
    try {
      const r = await fetch("/predict", { method: "POST", body: form });
      const j = await r.json();
      if (!r.ok) { fail(j.detail || `error ${r.status}`); return; }
      $("probability").textContent = (100 * j.probability).toFixed(1) + " %";
      $("class").textContent = j.prediction;
      $("class").className = "big " + (j.positive ? "positive" : "negative");
      $("point").textContent = `${j.operating_point} (>= ${j.threshold.toFixed(3)})`;
      $("heatmap").src = j.heatmap_png || "";
      $("heatmap_original").src = j.heatmap_original_png || "";
      $("preprocessed").src = j.preprocessed_png;
      $("warning").textContent = j.warning || ""; show("warning", !!j.warning);
      // a model trained on whole images does not use the box: say so rather than pretend
      $("note").textContent = j.note || ""; show("note", !!j.note);
      show("result", true);
      status(`Done: ${j.filename}${j.roi_used ? " with box" : (j.roi ? " (box not used)" : "")}.`);
      document.body.dataset.state = "done";
    } catch (e) { fail(String(e)); }
    finally { $("predict").disabled = false; }
  });
})();
