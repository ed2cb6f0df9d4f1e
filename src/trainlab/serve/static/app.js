// The drawing page of `trainlab serve`: draw (or drop an image) and see the model's top classes
// while drawing. It is a client of the same JSON API as any other: GET model, POST predict and
// POST preview (multipart field `file`). Paths are relative, so a proxy prefix works.
//
// Test hooks: <body data-state> is "loading" | "idle" | "pending" | "ready" | "error", and
// data-requests / data-results count rounds sent and shown. "ready" means the predictions shown
// are those of exactly what is on the pad now.

const TOP_K = 5;
const MIN_INTERVAL_MS = 50; // between live requests while drawing; never more than one in flight
const TIMEOUT_MS = 30_000;
// Pen width as a share of the pad's side. MNIST digits are ~20 px tall with 2-3 px strokes; a
// digit drawn over 2/3 of the pad with this pen has the same proportions once the server has
// cropped it to its ink and scaled it to 20 px.
const PEN = 0.08;
const INK = "#000";
const PAPER = "#fff";
const HANDWRITING = new Set(["digits", "characters"]);

const $ = (id) => document.getElementById(id);
const ui = {
  body: document.body,
  name: $("model-name"),
  facts: $("model-facts"),
  hint: $("hint"),
  zone: $("drop-zone"),
  canvas: $("pad"),
  undo: $("undo"),
  clear: $("clear"),
  file: $("file"),
  fileButton: $("file-button"),
  results: $("results"),
  status: $("status"),
  error: $("error"),
  predictions: $("predictions"),
  previewBox: $("preview-box"),
  preview: $("preview"),
  previewSize: $("preview-size"),
};
const ctx = ui.canvas.getContext("2d");

const state = {
  info: null, // GET model
  strokes: [], // each an array of [x, y] points, as shares of the pad's side (resolution-free)
  pointerId: null, // the pointer drawing now (one at a time: a second finger is ignored)
  rect: null, // the pad's box when the stroke began
  upload: null, // a chosen/dropped file: sent as is while nothing is drawn over it
  background: null, // its decoded picture, drawn under the strokes
  seq: 0, // bumped by every send and every clear; a response of an older seq is stale
  sent: 0,
  shown: 0,
  inFlight: false,
  dirty: false, // the pad changed since the last send
  timer: 0,
  lastSend: -Infinity,
  hasResult: false,
  error: null,
};

// ---- state shown to people and tests ---------------------------------------------------------

function setState(name) {
  ui.body.dataset.state = name;
  ui.results.setAttribute("aria-busy", String(name === "pending"));
}

function settle() {
  if (state.inFlight || state.dirty) return;
  setState(state.error ? "error" : state.hasResult ? "ready" : "idle");
  if (state.pointerId === null && state.hasResult && !state.error) announce();
}

function idleText() {
  if (state.info && !HANDWRITING.has(kind())) {
    return "Choose, drop or paste an image to see what the model thinks.";
  }
  return "Draw something to see what the model thinks.";
}

function showIdle() {
  state.hasResult = false;
  state.error = null;
  ui.predictions.replaceChildren();
  hidePreview();
  ui.error.hidden = true;
  ui.error.textContent = "";
  ui.status.textContent = idleText();
  if (ui.body.dataset.state !== "loading") setState("idle");
}

function showError(message) {
  state.error = message;
  state.hasResult = false;
  ui.predictions.replaceChildren();
  hidePreview();
  ui.error.textContent = message;
  ui.error.hidden = false;
  ui.status.textContent = "";
}

const percent = (p) => `${(100 * p).toFixed(1)}%`;

function showPredictions(predictions) {
  const rows = predictions.map((p, rank) => {
    const li = document.createElement("li");
    li.dataset.testid = "prediction";
    li.dataset.label = p.label;
    li.dataset.index = String(p.index);
    li.dataset.probability = String(p.probability);
    if (rank === 0) li.classList.add("top");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const dash = document.createElement("span");
    dash.className = "visually-hidden";
    dash.textContent = " — ";
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p.probability);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    bar.style.setProperty("--p", String(Math.max(0, Math.min(1, p.probability))));
    li.append(label, dash, value, bar);
    return li;
  });
  ui.predictions.replaceChildren(...rows);
  state.hasResult = true;
  state.error = null;
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function announce() {
  const rows = [...ui.predictions.children];
  if (!rows.length) return;
  const [best, ...rest] = rows.map((li) => `${li.dataset.label} (${percent(+li.dataset.probability)})`);
  const then = rest.slice(0, 2);
  ui.status.textContent = `Most likely ${best}${then.length ? `, then ${then.join(", ")}` : ""}.`;
}

async function showPreview(blob) {
  const old = ui.preview.src;
  ui.preview.src = URL.createObjectURL(blob);
  ui.previewBox.hidden = false;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  try {
    await ui.preview.decode();
  } catch {
    // replaced or cleared meanwhile, or not a picture: the <img> shows its alt text
  }
}

function hidePreview() {
  ui.previewBox.hidden = true;
  if (ui.preview.src.startsWith("blob:")) URL.revokeObjectURL(ui.preview.src);
  ui.preview.removeAttribute("src");
}

// ---- the pad ---------------------------------------------------------------------------------

function fitCanvas() {
  // The backing store follows the CSS size × devicePixelRatio, so strokes stay sharp on any
  // screen; strokes are kept resolution-free and simply drawn again.
  const side = Math.max(1, Math.round(ui.canvas.clientWidth * (window.devicePixelRatio || 1)));
  if (ui.canvas.width !== side || ui.canvas.height !== side) {
    ui.canvas.width = side;
    ui.canvas.height = side;
    redraw();
  }
}

function paper() {
  const { width, height } = ui.canvas;
  ctx.fillStyle = PAPER;
  ctx.fillRect(0, 0, width, height);
  const picture = state.background;
  if (picture) {
    const scale = Math.min(width / picture.width, height / picture.height);
    const w = picture.width * scale;
    const h = picture.height * scale;
    ctx.drawImage(picture, (width - w) / 2, (height - h) / 2, w, h);
  }
}

function drawPath(points) {
  const side = ui.canvas.width;
  const width = PEN * side;
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineWidth = width;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  if (points.length === 1) {
    ctx.arc(points[0][0] * side, points[0][1] * side, width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.moveTo(points[0][0] * side, points[0][1] * side);
  for (const [x, y] of points.slice(1)) ctx.lineTo(x * side, y * side);
  ctx.stroke();
}

function redraw() {
  paper();
  for (const stroke of state.strokes) drawPath(stroke);
}

const hasInput = () => state.strokes.length > 0 || state.upload !== null;

function pointOf(event) {
  const r = state.rect;
  return [(event.clientX - r.left) / r.width, (event.clientY - r.top) / r.height];
}

ui.canvas.addEventListener("pointerdown", (event) => {
  if (state.pointerId !== null || !event.isPrimary) return;
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  try {
    ui.canvas.setPointerCapture(event.pointerId); // keep the stroke when it leaves the pad
  } catch {
    // a pointer the browser no longer tracks: the stroke still works inside the pad
  }
  state.pointerId = event.pointerId;
  state.rect = ui.canvas.getBoundingClientRect();
  ui.canvas.dataset.pointerType = event.pointerType;
  const stroke = [pointOf(event)];
  state.strokes.push(stroke);
  drawPath(stroke);
  changed();
});

ui.canvas.addEventListener("pointermove", (event) => {
  if (event.pointerId !== state.pointerId) return;
  event.preventDefault();
  const stroke = state.strokes[state.strokes.length - 1];
  const coalesced = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of coalesced.length ? coalesced : [event]) {
    const point = pointOf(e);
    const last = stroke[stroke.length - 1];
    if (point[0] === last[0] && point[1] === last[1]) continue;
    stroke.push(point);
    drawPath([last, point]);
  }
  changed();
});

function endStroke(event) {
  if (event.pointerId !== state.pointerId) return;
  state.pointerId = null;
  state.rect = null;
  // The last points may not have been sent yet: send now, without waiting for the interval.
  if (state.dirty) schedule(true);
  else settle();
}
ui.canvas.addEventListener("pointerup", endStroke);
ui.canvas.addEventListener("pointercancel", endStroke);
ui.canvas.addEventListener("lostpointercapture", endStroke);

function clearPad() {
  state.seq += 1; // whatever is in flight now is stale
  state.strokes = [];
  state.pointerId = null;
  state.upload = null;
  state.background?.close?.();
  state.background = null;
  state.dirty = false;
  clearTimeout(state.timer);
  state.timer = 0;
  redraw();
  showIdle();
}

function undo() {
  if (state.pointerId !== null) return;
  if (!state.strokes.length) {
    if (state.upload) clearPad();
    return;
  }
  state.strokes.pop();
  if (!hasInput()) {
    clearPad();
    return;
  }
  redraw();
  changed();
  schedule(true);
}

ui.clear.addEventListener("click", clearPad);
ui.undo.addEventListener("click", undo);
document.addEventListener("keydown", (event) => {
  if (event.defaultPrevented || event.isComposing) return;
  if (event.key === "Escape") {
    event.preventDefault();
    clearPad();
  } else if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  }
});

// ---- images from a file, a drop or the clipboard ----------------------------------------------

async function useFile(file) {
  clearPad();
  const limit = state.info?.limits?.max_upload_bytes;
  if (typeof limit === "number" && file.size > limit) {
    // Refused here, not after uploading it all for a 413.
    // In bytes, as the server's own messages: rounded megabytes could read "0.2 MB, at most 0.2".
    showError(`${file.name}: ${file.size.toLocaleString("en")} bytes; this server takes ` +
      `images of at most ${limit.toLocaleString("en")} bytes`);
    return;
  }
  state.upload = file;
  try {
    state.background = await createImageBitmap(file);
  } catch {
    state.background = null; // not something the browser can show; the server will say why
  }
  if (state.upload !== file) return; // cleared or replaced while decoding
  redraw();
  changed();
  schedule(true);
}

ui.file.addEventListener("change", () => {
  const [file] = ui.file.files;
  ui.file.value = ""; // choosing the same file again is a new choice
  if (file) useFile(file);
});

for (const name of ["dragenter", "dragover"]) {
  ui.zone.addEventListener(name, (event) => {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    ui.zone.classList.add("dragging");
  });
}
ui.zone.addEventListener("dragleave", (event) => {
  if (!ui.zone.contains(event.relatedTarget)) ui.zone.classList.remove("dragging");
});
ui.zone.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.zone.classList.remove("dragging");
  const [file] = event.dataTransfer.files;
  if (file) useFile(file);
  else {
    clearPad();
    showError("drop an image file (a link or text cannot be classified)");
    settle();
  }
});
// A drop that misses the pad must not make the browser leave the page to open the file.
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("drop", (event) => event.preventDefault());

document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    useFile(file);
  }
});

// ---- talking to the server --------------------------------------------------------------------

async function errorText(response) {
  const text = await response.text().catch(() => "");
  try {
    const data = JSON.parse(text);
    if (data && typeof data.error === "string") return data.error;
    if (data && typeof data.detail === "string") return data.detail;
  } catch {
    // not JSON: a proxy's page or a crash; show its start
  }
  const reason = `${response.status} ${response.statusText}`.trim();
  const body = text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
  return `the server answered ${reason}${body ? `: ${body}` : ""}`;
}

async function call(path, options) {
  let response;
  try {
    response = await fetch(path, { ...options, signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (error) {
    if (error.name === "TimeoutError") {
      throw new Error(`the server did not answer within ${TIMEOUT_MS / 1000} s`);
    }
    throw new Error(`cannot reach the server (${error.message})`);
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function post(path, blob, filename) {
  const body = new FormData();
  body.append("file", blob, filename);
  return call(path, { method: "POST", body });
}

async function json(response) {
  try {
    return await response.json();
  } catch {
    throw new Error(`${response.url} sent a response that is not JSON`);
  }
}

function snapshot() {
  if (state.upload && !state.strokes.length) {
    return Promise.resolve({ blob: state.upload, filename: state.upload.name || "upload" });
  }
  // toBlob copies the pixels now and encodes later, so later strokes are not in this round.
  return new Promise((resolve, reject) => {
    ui.canvas.toBlob((blob) => {
      if (blob) resolve({ blob, filename: "drawing.png" });
      else reject(new Error("the browser could not encode the drawing as PNG"));
    }, "image/png");
  });
}

function changed() {
  state.dirty = true;
  setState("pending");
  schedule();
}

function schedule(now = false) {
  if (state.inFlight) return; // the round in flight sends the next one when it ends
  if (now && state.timer) {
    clearTimeout(state.timer);
    state.timer = 0;
  }
  if (state.timer) return;
  const wait = now ? 0 : state.lastSend + MIN_INTERVAL_MS - performance.now();
  if (wait > 0) {
    state.timer = setTimeout(() => {
      state.timer = 0;
      send();
    }, wait);
  } else {
    send();
  }
}

async function send() {
  if (state.inFlight) return;
  if (!state.dirty) return settle();
  if (!hasInput()) {
    state.dirty = false;
    showIdle();
    return settle();
  }
  state.dirty = false;
  state.inFlight = true;
  state.lastSend = performance.now();
  const seq = ++state.seq;
  ui.body.dataset.requests = String(++state.sent);
  try {
    const { blob, filename } = await snapshot();
    const [predicted, preview] = await Promise.all([
      post(`predict?top_k=${TOP_K}`, blob, filename).then(json),
      post("preview", blob, filename).then((response) => response.blob()),
    ]);
    if (!Array.isArray(predicted?.predictions)) {
      throw new Error("the server's answer has no predictions");
    }
    if (seq === state.seq) {
      showPredictions(predicted.predictions);
      await showPreview(preview);
    }
  } catch (error) {
    if (seq === state.seq) showError(error.message || String(error));
  } finally {
    state.inFlight = false;
  }
  if (seq === state.seq) ui.body.dataset.results = String(++state.shown);
  if (state.dirty) schedule();
  else settle();
}

// ---- the model ----------------------------------------------------------------------------------

const kind = () => state.info?.preprocessing?.kind ?? "digits";

function showModel(info) {
  ui.name.textContent = info.name;
  document.title = `trainlab: ${info.name}`;
  const facts = [];
  const classes = info.classes ?? [];
  const input = info.input ?? {};
  const shown = classes.slice(0, 12).join(", ");
  facts.push(`${classes.length} classes (${shown}${classes.length > 12 ? ", …" : ""})`);
  facts.push(`input ${input.channels}×${input.height}×${input.width}, ${kind()}`);
  const test = info.run?.test;
  if (typeof test?.accuracy === "number") {
    const n = typeof test.n === "number" ? ` on ${test.n.toLocaleString("en")} images` : "";
    facts.push(`test accuracy ${percent(test.accuracy)}${n}`);
  }
  if (info.format) facts.push(info.format.toUpperCase());
  ui.facts.textContent = facts.join(" · ");
  ui.previewSize.textContent = ` (${input.width}×${input.height})`;
  if (HANDWRITING.has(kind())) {
    const what = kind() === "digits" ? "a digit" : "a character";
    ui.hint.textContent = `Draw ${what} with the mouse, a finger or a pen, large and centred.`;
    ui.canvas.setAttribute("aria-label", `Drawing area: draw ${what}`);
  } else {
    // Trained on photos: a picture is what it knows; a drawing is still classified.
    ui.body.classList.add("photos");
    ui.hint.textContent =
      "This model was trained on photos: choose, drop or paste one. You can draw too, " +
      "but drawings look nothing like its training images.";
    ui.canvas.setAttribute("aria-label", "Image area: the chosen image, or your drawing");
  }
  ui.status.textContent = idleText();
}

async function loadModel() {
  try {
    state.info = await json(await call("model", {}));
    showModel(state.info);
    if (!state.inFlight && !state.dirty && !state.hasResult && !state.error) setState("idle");
    else settle();
  } catch (error) {
    ui.name.textContent = "(model unknown)";
    ui.facts.textContent = `cannot load the model's description: ${error.message}`;
    showError(ui.facts.textContent);
    settle();
  }
}

new ResizeObserver(fitCanvas).observe(ui.canvas);
window.addEventListener("resize", fitCanvas); // a new devicePixelRatio (zoom) keeps the CSS size
fitCanvas();
loadModel();
