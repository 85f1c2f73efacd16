// The page: record from the microphone (Web Audio, encoded here as 16-bit PCM WAV) or take a file, POST it to
// /predict?timeline=true, and show the answer: bars, a timeline chart for longer audio, or the API's error.
"use strict";

const MAX_SECONDS = 120;  // a recording stops by itself after this (48 kHz 16-bit: ~11 MB, under the upload limit)
const COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D1F", "#333333"];
const SVG = "http://www.w3.org/2000/svg";
const KEY_STORE = "ser-api-key";

const $ = (id) => document.getElementById(id);
const pct = (p) => `${(100 * p).toFixed(1)} %`;
const secs = (s) => `${s.toFixed(s < 10 ? 2 : 1)} s`;

let recording = null;  // {stream, context, source, node, chunks, started, timer}

// ---- the API ----------------------------------------------------------------------------------------------

function headers() {
  const key = $("key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function predict(file) {
  showBusy(`Analysing ${file.name}…`);
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch("predict?timeline=true", { method: "POST", body: form, headers: headers() });
  } catch (err) {
    return showError(`Could not reach the service (${err.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) { /* not JSON: a proxy's error page, say */ }
  window.lastResult = { status: response.status, body };
  $("raw").value = JSON.stringify(window.lastResult);
  if (!response.ok || !body || !body.probabilities) {
    const detail = body && body.detail ? body.detail : `HTTP ${response.status} ${response.statusText}`;
    showError(detail, body && body.code, response.status);
    return;
  }
  render(body, file);
}

// ---- recording --------------------------------------------------------------------------------------------

async function startRecording() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.AudioWorkletNode) {
    showError("This browser gives the page no microphone here: recording needs a current browser and a page " +
              "opened over https or on localhost. You can still choose a file.");
    return;
  }
  $("record").disabled = true;
  let stream;
  try {
    // The raw signal: echo cancellation, noise suppression and gain control change the voice the model hears.
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
  } catch (err) {
    $("record").disabled = false;
    showError(`No microphone: ${err.message || err.name}.`);
    return;
  }
  let context, source, node;
  try {
    context = new AudioContext();
    await context.audioWorklet.addModule("page/recorder-worklet.js");
    source = context.createMediaStreamSource(stream);
    node = new AudioWorkletNode(context, "capture");
  } catch (err) {
    stream.getTracks().forEach((track) => track.stop());
    if (context) context.close();
    $("record").disabled = false;
    showError(`Recording could not start: ${err.message || err.name}.`);
    return;
  }
  const chunks = [];
  node.port.onmessage = (event) => {
    chunks.push(event.data);
    let sum = 0;
    for (const x of event.data) sum += x * x;
    const level = Math.min(1, Math.sqrt(sum / event.data.length) * 8);
    $("level").style.width = `${100 * level}%`;
  };
  source.connect(node);
  node.connect(context.destination);  // silent (the node writes no output), but keeps the graph running
  const started = performance.now();
  const timer = setInterval(() => {
    const elapsed = (performance.now() - started) / 1000;
    $("rec-status").textContent = `Recording… ${elapsed.toFixed(0)} s (Stop when done)`;
    if (elapsed >= MAX_SECONDS) stopRecording();
  }, 250);
  recording = { stream, context, source, node, chunks, timer };
  $("stop").disabled = false;
  $("stop").focus();
  $("rec-status").textContent = "Recording… (Stop when done)";
}

async function stopRecording() {
  if (!recording) return;
  const { stream, context, source, node, chunks, timer } = recording;
  recording = null;
  clearInterval(timer);
  source.disconnect();
  node.disconnect();
  stream.getTracks().forEach((track) => track.stop());
  const rate = context.sampleRate;
  await context.close();
  $("stop").disabled = true;
  $("record").disabled = false;
  $("record").focus();
  $("level").style.width = "0";
  const samples = concat(chunks);
  $("rec-status").textContent = `Recorded ${secs(samples.length / rate)}.`;
  predict(new File([encodeWav(samples, rate)], "recording.wav", { type: "audio/wav" }));
}

function concat(chunks) {
  const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/** Mono float samples as a 16-bit PCM WAV file. */
function encodeWav(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (at, s) => { for (let i = 0; i < s.length; i++) view.setUint8(at + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * samples.length, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + 2 * i, Math.round(s < 0 ? s * 0x8000 : s * 0x7fff), true);
  }
  return view.buffer;
}

// ---- showing the answer -----------------------------------------------------------------------------------

function showBusy(message) {
  $("result").setAttribute("aria-busy", "true");
  $("error").hidden = true;
  $("summary").hidden = false;
  $("summary").textContent = message;
}

function showError(detail, code, status) {
  $("result").setAttribute("aria-busy", "false");
  clearResult();
  $("summary").hidden = true;
  const error = $("error");
  error.textContent = "";
  const strong = document.createElement("strong");
  strong.textContent = "Error: ";
  const message = document.createElement("span");
  message.className = "detail";
  message.textContent = detail;
  error.append(strong, message);
  if (code || status) {
    const small = document.createElement("small");
    small.textContent = ` (${[code, status && `HTTP ${status}`].filter(Boolean).join(", ")})`;
    error.append(small);
  }
  if (status === 401 || status === 403) error.append(" Enter a valid API key below.");
  error.hidden = false;
  if (status === 401 || status === 403) $("key").focus();
}

function clearResult() {
  $("bars").replaceChildren();
  $("details").textContent = "";
  $("timeline").hidden = true;
  $("chart").replaceChildren();
  $("playback").hidden = true;
}

function colorOf(labels) {
  return Object.fromEntries(labels.map((label, i) => [label, COLORS[i % COLORS.length]]));
}

function render(body, file) {
  $("result").setAttribute("aria-busy", "false");
  clearResult();
  $("error").hidden = true;
  const labels = Object.keys(body.probabilities);
  const color = colorOf(labels);
  const summary = $("summary");
  summary.hidden = false;
  summary.replaceChildren("Most likely: ");
  const top = document.createElement("strong");
  top.id = "top-emotion";
  top.textContent = body.emotion;
  summary.append(top, ` (${pct(body.probability)}), from ${secs(body.speech_seconds)} of speech.`);

  const sorted = labels.slice().sort((a, b) => body.probabilities[b] - body.probabilities[a]);
  for (const label of sorted) {
    const p = body.probabilities[label];
    const li = document.createElement("li");
    li.dataset.emotion = label;
    if (label === body.emotion) li.className = "top";
    li.innerHTML = '<span class="name"><i class="swatch"></i></span><span class="bar"><span class="fill"></span>' +
                   '</span><span class="value"></span>';
    li.querySelector(".swatch").style.background = color[label];
    li.querySelector(".name").append(label);
    li.querySelector(".fill").style.width = `${100 * p}%`;
    li.querySelector(".value").textContent = pct(p);
    $("bars").append(li);
  }
  const audio = body.audio;
  $("details").textContent =
    `Speech analysed: ${secs(body.speech_seconds)} of ${secs(audio.duration)} (${audio.format}, ` +
    `${audio.sample_rate} Hz). Model ${body.model.name} version ${body.model.version}` +
    (body.windows > 1 ? `; the answer is the mean of ${body.windows} windows.` : ".");
  const playback = $("playback");
  if (playback.src) URL.revokeObjectURL(playback.src);
  playback.src = URL.createObjectURL(file);
  playback.hidden = false;

  // the chart for audio at least two windows long (6 s with the default model's 3 s windows)
  const timeline = body.timeline || [];
  if (timeline.length > 1 && audio.duration >= 2 * (timeline[0].end - timeline[0].start)) {
    renderTimeline(timeline, labels, color, audio.duration);
  }
}

function el(name, attrs, parent) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

/** One line per emotion over the windows' centres; windows without speech shaded and labelled. */
function renderTimeline(timeline, labels, color, duration) {
  const W = 640, H = 240, left = 48, right = 10, topPad = 10, bottom = 30;
  const end = Math.max(duration, timeline[timeline.length - 1].end);
  const x = (t) => left + (W - left - right) * t / end;
  const y = (p) => topPad + (H - topPad - bottom) * (1 - p);
  const centres = timeline.map((w) => (w.start + w.end) / 2);
  const silent = timeline.filter((w) => !w.speech);

  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc" });
  el("title", { id: "chart-title" }, svg).textContent = "Probability of each emotion over time";
  el("desc", { id: "chart-desc" }, svg).textContent =
    `${timeline.length} windows over ${secs(end)}; ` +
    (silent.length ? `${silent.length} without speech (shaded). ` : "speech in every window. ") +
    "The table below lists them.";

  // each window's cell: from half-way to the previous centre to half-way to the next
  timeline.forEach((w, i) => {
    if (w.speech) return;
    const from = i === 0 ? 0 : (centres[i - 1] + centres[i]) / 2;
    const to = i === timeline.length - 1 ? end : (centres[i] + centres[i + 1]) / 2;
    el("rect", { class: "no-speech", x: x(from), y: topPad, width: x(to) - x(from), height: H - topPad - bottom }, svg);
    el("text", { class: "no-speech-label", x: (x(from) + x(to)) / 2, y: topPad + 14, "text-anchor": "middle" }, svg)
      .textContent = "no speech";
  });
  for (const p of [0, 0.5, 1]) {
    el("line", { class: "grid", x1: left, x2: W - right, y1: y(p), y2: y(p) }, svg);
    el("text", { class: "axis", x: left - 6, y: y(p) + 4, "text-anchor": "end" }, svg).textContent = `${100 * p}%`;
  }
  const step = [1, 2, 5, 10, 15, 30, 60, 120, 300].find((s) => end / s <= 8) || 600;
  for (let t = 0; t <= end + 1e-9; t += step) {
    el("text", { class: "axis", x: x(t), y: H - 10, "text-anchor": "middle" }, svg).textContent = `${t} s`;
  }
  for (const label of labels) {
    let d = "", pen = "M";
    timeline.forEach((w, i) => {
      if (!w.speech) { pen = "M"; return; }
      d += `${pen}${x(centres[i]).toFixed(1)},${y(w.probabilities[label]).toFixed(1)} `;
      pen = "L";
    });
    const path = el("path", { class: "series", d, stroke: color[label] }, svg);
    path.dataset.emotion = label;
    timeline.forEach((w, i) => {  // dots, so that a lone window between silences still shows
      if (w.speech) el("circle", { cx: x(centres[i]), cy: y(w.probabilities[label]), r: 2.5, fill: color[label] }, svg);
    });
  }
  $("chart").append(svg);

  $("legend").replaceChildren(...labels.map((label) => {
    const li = document.createElement("li");
    li.innerHTML = '<i class="swatch"></i>';
    li.firstChild.style.background = color[label];
    li.append(label);
    return li;
  }), Object.assign(document.createElement("li"), { className: "legend-no-speech", textContent: "no speech" }));

  $("windows").replaceChildren(...timeline.map((w) => {
    const tr = document.createElement("tr");
    if (!w.speech) tr.className = "no-speech";
    for (const text of [`${w.start.toFixed(1)}–${w.end.toFixed(1)}`, w.speech ? "yes" : "no",
                        w.emotion || "–", w.probability == null ? "–" : pct(w.probability)]) {
      tr.append(Object.assign(document.createElement("td"), { textContent: text }));
    }
    return tr;
  }));
  $("timeline").hidden = false;
}

// ---- wiring -----------------------------------------------------------------------------------------------

function setUp() {
  const key = $("key");
  try { key.value = localStorage.getItem(KEY_STORE) || ""; } catch (err) { /* storage off */ }
  key.addEventListener("change", () => {
    try { localStorage.setItem(KEY_STORE, key.value.trim()); } catch (err) { /* storage off */ }
  });

  $("record").addEventListener("click", startRecording);
  $("stop").addEventListener("click", stopRecording);
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) predict(file);
    event.target.value = "";  // the same file again is a new choice
  });

  const drop = $("drop");
  // a file dropped anywhere else must not make the browser leave the page to show it
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
  drop.addEventListener("dragover", () => drop.classList.add("over"));
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) predict(file);
  });

  fetch("health", { headers: headers() }).then((r) => r.json()).then((h) => {
    if (h.model) $("model").textContent = `Model ${h.model.name} version ${h.model.version} · `;
  }).catch(() => {});
}

document.addEventListener("DOMContentLoaded", setUp);
