// The page at /ui: one panel per model of /models, built from its schema, so a model added
// later appears without editing this file. No library, no build step, nothing from
// another host (the Content-Security-Policy allows only this one). Text from the service
// is set with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "model-serving-api-key";

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

// One call to the service: {ok, status, data | error, ms}. The error is the service's
// error body ({"error": ...}) when it sent one.
async function call(method, path, body, contentType) {
  const headers = {};
  if (contentType) headers["Content-Type"] = contentType;
  if (apiKey()) headers["Authorization"] = "Bearer " + apiKey();
  const started = performance.now();
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (failure) {
    return { ok: false, status: 0, error: "the service did not answer (" + failure.message + ")", ms: 0 };
  }
  const text = await response.text();
  const ms = performance.now() - started;
  let data = null;
  try {
    data = JSON.parse(text);
  } catch (notJson) {
    data = null;
  }
  if (!response.ok) {
    const error = data && typeof data.error === "string" ? data.error : (text.slice(0, 200) || response.statusText);
    return { ok: false, status: response.status, error, ms };
  }
  return { ok: true, status: response.status, data, ms };
}

function errorText(result) {
  const hint = result.status === 401 ? " Enter an API key above." : result.status === 403 ? " This key lacks the scope." : "";
  return (result.status ? result.status + ": " : "") + result.error + hint;
}

function probabilityList(name, probabilities, testid) {
  const list = element("ul", { class: "probabilities", "data-testid": testid, "aria-label": "probability per class" });
  const sorted = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of sorted) {
    const percent = (100 * p).toFixed(1);
    const bar = element("span");
    bar.style.width = percent + "%";
    list.append(element("li", {},
      element("span", { text: label }),
      element("span", { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100,
                        "aria-valuenow": percent, "aria-label": label }, bar),
      element("span", { class: "p", text: percent + "%" })));
  }
  return list;
}

// What a prediction call answered, in the panel's result area.
function showAnswer(model, area, result, thumbnails) {
  area.textContent = "";
  if (!result.ok) {
    area.append(element("p", { class: "error", role: "alert", "data-testid": `ui-${model.name}-error`,
                               text: errorText(result) }));
    return;
  }
  const predictions = result.data.predictions;
  const first = predictions[0];
  area.append(element("p", { class: "answer" },
    element("span", { class: "label", "data-testid": `ui-${model.name}-label`,
                      text: predictions.map((p) => p.label).join(", ") }),
    " ",
    element("span", { class: "meta", "data-testid": `ui-${model.name}-meta`,
                      text: `answered by ${first.model} in ${result.ms.toFixed(0)} ms` })));
  if (predictions.length > 1) area.append(element("p", { class: "meta", text: `${predictions[0].label}: the first image's probabilities` }));
  area.append(probabilityList(model.name, first.probabilities, `ui-${model.name}-probabilities`));
  if (thumbnails) {
    const grid = element("div", { class: "images" });
    predictions.forEach((prediction, i) => {
      const best = Math.max(...Object.values(prediction.probabilities));
      grid.append(element("figure", { "data-testid": `ui-${model.name}-image` },
        element("img", { src: thumbnails[i].url, alt: thumbnails[i].name }),
        element("figcaption", {},
          element("strong", { text: prediction.label }), ` ${(100 * best).toFixed(1)}% `,
          element("span", { class: "meta", text: thumbnails[i].name }))));
    });
    area.append(grid);
  }
}

function tabularInputs(model, example) {
  const form = element("div", { class: "fields", "data-testid": `ui-${model.name}-input` });
  const read = [];
  for (const feature of model.features) {
    const id = `ui-${model.name}-${feature.name}`;
    const value = example && example[feature.name] !== undefined ? example[feature.name] : undefined;
    const label = element("label", { for: id, text: feature.name, title: feature.description || undefined });
    if (feature.categories) {
      const select = element("select", { id, name: feature.name });
      for (const category of feature.categories) select.append(element("option", { value: category, text: category }));
      if (value !== undefined) select.value = String(value);
      form.append(element("div", { class: "field" }, label, select));
      read.push(() => [feature.name, select.value]);
    } else {
      const low = feature.minimum, high = feature.maximum;
      const step = feature.integer ? 1 : (high - low) / 200;
      const start = value !== undefined ? value : (feature.integer ? Math.round((low + high) / 2) : (low + high) / 2);
      const range = element("input", { id, type: "range", min: low, max: high, step, value: start,
                                       "aria-describedby": id + "-value" });
      range.value = String(start);
      const output = element("output", { id: id + "-value", for: id, text: String(start) });
      range.addEventListener("input", () => { output.textContent = range.value; });
      form.append(element("div", { class: "field" }, label, range, output));
      read.push(() => [feature.name, Number(range.value)]);
    }
  }
  return { node: form, record: () => Object.fromEntries(read.map((get) => get())) };
}

// A canvas to draw on (mouse, pen, touch: pointer events), dark on light as on paper.
function drawingCanvas(model) {
  const canvas = element("canvas", { width: 192, height: 192, tabindex: 0, "data-testid": `ui-${model.name}-input`,
                                     role: "img", "aria-label": `drawing area for ${model.name}: draw with a mouse, pen or finger` });
  const context = canvas.getContext("2d");
  const clear = () => {
    context.fillStyle = "#fff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.drawn = "";
  };
  clear();
  context.lineWidth = 16;
  context.lineCap = context.lineJoin = "round";
  context.strokeStyle = "#000";
  let drawing = false;
  const at = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...at(event));
    context.lineTo(...at(event));
    context.stroke();
    canvas.dataset.drawn = "yes";
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.lineTo(...at(event));
    context.stroke();
  });
  const stop = () => { drawing = false; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  return { canvas, clear };
}

function imageInputs(model) {
  const id = `ui-${model.name}-files`;
  const input = element("input", { id, type: "file", accept: "image/*", multiple: true,
                                   "data-testid": model.features.length ? `ui-${model.name}-file` : `ui-${model.name}-input` });
  const drop = element("label", { for: id, class: "drop", tabindex: -1 },
    element("span", { text: "Drop images here, or choose files: " }), input);
  const chosen = element("p", { class: "meta", role: "status" });
  let files = [];
  const take = (list) => {
    files = Array.from(list);
    chosen.textContent = files.length ? `${files.length} file(s): ${files.map((f) => f.name).join(", ")}` : "";
  };
  input.addEventListener("change", () => take(input.files));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    take(event.dataTransfer.files);
  });
  return { node: element("div", {}, drop, chosen), files: () => files,
           reset: () => { files = []; input.value = ""; chosen.textContent = ""; } };
}

async function loadReports(model, area) {
  area.textContent = "";
  const drift = await call("GET", `/models/${model.name}/drift`);
  let text, drifted = false;
  if (drift.ok) {
    const report = drift.data;
    drifted = report.drifted;
    const flagged = report.features.filter((f) => f.drifted).map((f) => f.name);
    if (report.prediction.drifted) flagged.push("prediction");
    text = report.window < report.minimum_rows
      ? `Drift: collecting (${report.window} of the ${report.minimum_rows} rows needed for a verdict)`
      : report.drifted ? `Drift: DRIFTED (${flagged.join(", ")}) over the last ${report.window} rows`
        : `Drift: none over the last ${report.window} rows`;
  } else {
    text = drift.status === 404 ? "Drift: monitoring off" : "Drift: " + errorText(drift);
  }
  area.append(element("p", { class: drifted ? "report drifted" : "report", "data-testid": `ui-${model.name}-drift`, text }));
  if (!model.shadow) return;
  const shadow = await call("GET", `/models/${model.name}/shadow`);
  const s = shadow.data;
  area.append(element("p", { class: "report", "data-testid": `ui-${model.name}-shadow`,
    text: shadow.ok
      ? `Shadow ${s.challenger}: ${s.rows_compared} rows compared, label agreement ` +
        `${s.label_agreement === null ? "n/a" : (100 * s.label_agreement).toFixed(1) + "%"}, ` +
        `mean |diff| ${s.mean_abs_diff === null ? "n/a" : s.mean_abs_diff.toFixed(3)}, ${s.errors} errors, ${s.shed} shed`
      : "Shadow: " + errorText(shadow) }));
}

function panel(model, example) {
  const name = model.name;
  const title = element("h2", { id: `ui-${name}-title`, text: name });
  const section = element("section", { class: "panel", "aria-labelledby": title.id, "data-testid": `ui-${name}` });
  const role = model.role ? `, ${model.role}` : "";
  section.append(title, element("p", { class: "tag", text: `${model.tag}${role}; classes: ${model.class_names.join(", ")}` }));
  const result = element("div", { class: "result-area", "aria-live": "polite" });
  const reports = element("div", { class: "reports" });
  const submit = element("button", { type: "button", "data-testid": `ui-${name}-submit`, text: "Predict" });
  const actions = element("div", { class: "actions" }, submit);
  let predict;
  if (model.task === "tabular") {
    const inputs = tabularInputs(model, example);
    section.append(inputs.node);
    predict = () => call("POST", `/${name}`, JSON.stringify({ records: [inputs.record()] }), "application/json")
      .then((answer) => showAnswer(model, result, answer));
  } else {
    const files = imageInputs(model);
    let drawing = null;
    if (model.features.length) {  // an image model with pixel features (digits): draw one
      drawing = drawingCanvas(model);
      const clear = element("button", { type: "button", class: "secondary", text: "Clear drawing" });
      clear.addEventListener("click", drawing.clear);
      section.append(element("p", { class: "hint", text: "Draw on the canvas, or choose image files." }),
                     drawing.canvas);
      actions.append(clear);
    }
    section.append(files.node);
    predict = async () => {
      let parts = files.files().map((file) => ({ blob: file, name: file.name }));
      if (!parts.length && drawing) {
        const blob = await new Promise((resolve) => drawing.canvas.toBlob(resolve, "image/png"));
        parts = [{ blob, name: "drawing.png" }];
      }
      if (!parts.length) {
        showAnswer(model, result, { ok: false, status: 0, error: "choose or drop an image first" });
        return;
      }
      const form = new FormData();
      for (const part of parts) form.append("images", part.blob, part.name);
      const answer = await call("POST", `/${name}`, form);
      showAnswer(model, result, answer, parts.map((part) => ({ url: URL.createObjectURL(part.blob), name: part.name })));
    };
  }
  submit.addEventListener("click", async () => {
    submit.disabled = true;
    try {
      await predict();
      await loadReports(model, reports);
    } finally {
      submit.disabled = false;
    }
  });
  section.append(actions, result, reports);
  loadReports(model, reports);
  return section;
}

async function showModels() {
  const container = document.getElementById("models");
  const [models, examples] = await Promise.all([call("GET", "/models"), call("GET", "/ui/examples.json")]);
  container.textContent = "";
  if (!models.ok) {
    container.append(element("p", { class: "error", role: "alert", "data-testid": "ui-models-error",
                                    text: "The models could not be listed: " + errorText(models) }));
    return;
  }
  for (const model of models.data.models) {
    container.append(panel(model, examples.ok ? examples.data[model.name] : undefined));
  }
}

function keyForm() {
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const status = document.getElementById("key-status");
  input.value = apiKey();
  status.textContent = apiKey() ? "a key is set for this tab" : "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.value.trim()) sessionStorage.setItem(KEY_STORAGE, input.value.trim());
    else sessionStorage.removeItem(KEY_STORAGE);
    status.textContent = apiKey() ? "a key is set for this tab" : "no key";
    showModels();
  });
}

keyForm();
showModels();
