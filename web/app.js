// The page: controls, canvases and audio; every sampling loop runs in worker.js.
// A test hook, window.zooTest, runs the same tasks with fixed inputs (tests/test_web.py).

const params = new URLSearchParams(location.search);
const exportsBase = new URL(params.get("exports") || "../exports/", location.href).href;
const $ = (id) => document.getElementById(id);

function showError(where, message) {
  const box = $(where);
  box.textContent = message;
  box.hidden = !message;
}

// --- The worker --------------------------------------------------------------------------------

let worker = null, nextId = 0;
const pending = {};

function call(task, params = {}, onProgress = null) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending[id] = { resolve, reject, onProgress };
    worker.postMessage({ id, task, params });
  });
}

function startWorker() {
  worker = new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  worker.onmessage = ({ data }) => {
    const job = pending[data.id];
    if (!job) return;
    if (data.type === "progress") { if (job.onProgress) job.onProgress(data); return; }
    delete pending[data.id];
    if (data.type === "result") job.resolve(data.result);
    else job.reject(new Error(data.message));
  };
  worker.onerror = (e) => showError("status-error", `The sampling worker failed: ${e.message || "see the console"}`);
  return call("configure", { exportsBase });
}

// --- Drawing -----------------------------------------------------------------------------------

function drawGrid(canvas, pixels, dims, rows, cols, scale = 3, pad = 2) {
  // pixels in [0, 1], [rows * cols, H, W, 1] -> one grid, each pixel `scale` x `scale`, as zoo.runtime.images.grid
  const h = dims[1], w = dims[2];
  const width = cols * (w + pad) + pad, height = rows * (h + pad) + pad;
  canvas.width = width * scale;
  canvas.height = height * scale;
  const small = new ImageData(width, height);
  small.data.fill(255);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const offset = (r * cols + c) * h * w;
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const v = Math.round(255 * Math.min(1, Math.max(0, pixels[offset + y * w + x])));
          const at = 4 * ((pad + r * (h + pad) + y) * width + pad + c * (w + pad) + x);
          small.data[at] = small.data[at + 1] = small.data[at + 2] = v;
        }
      }
    }
  }
  const scratch = new OffscreenCanvas(width, height);
  scratch.getContext("2d").putImageData(small, 0, 0);
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, 0, 0, canvas.width, canvas.height);
}

function drawWave(canvas, clip) {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#246";
  ctx.beginPath();
  const mid = canvas.height / 2;
  const peak = clip.reduce((m, v) => Math.max(m, Math.abs(v)), 1e-6); // drawn at full height
  for (let x = 0; x < canvas.width; x++) {
    const start = Math.floor((x / canvas.width) * clip.length), end = Math.max(start + 1, Math.floor(((x + 1) / canvas.width) * clip.length));
    let lo = 0, hi = 0;
    for (let i = start; i < end && i < clip.length; i++) { lo = Math.min(lo, clip[i]); hi = Math.max(hi, clip[i]); }
    ctx.moveTo(x + 0.5, mid - (hi / peak) * mid);
    ctx.lineTo(x + 0.5, mid - (lo / peak) * mid + 1);
  }
  ctx.stroke();
}

function wavBlob(clip, sampleRate) {
  // 16-bit PCM WAV, as zoo.runtime.audio.write_wav writes
  const buffer = new ArrayBuffer(44 + 2 * clip.length), view = new DataView(buffer);
  const text = (at, s) => [...s].forEach((c, i) => view.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * clip.length, true); text(8, "WAVE"); text(12, "fmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * clip.length, true);
  clip.forEach((v, i) => view.setInt16(44 + 2 * i, Math.round(32767 * Math.min(1, Math.max(-1, v))), true));
  return new Blob([buffer], { type: "audio/wav" });
}

let audio = null;
function play(clip, sampleRate) {
  audio = audio || new AudioContext();
  const buffer = audio.createBuffer(1, clip.length, sampleRate);
  buffer.copyToChannel(clip, 0);
  const source = audio.createBufferSource();
  source.buffer = buffer;
  source.connect(audio.destination);
  source.start();
}

// --- Sections --------------------------------------------------------------------------------

async function busy(button, errorBox, work) {
  button.disabled = true;
  showError(errorBox, "");
  try {
    await work();
  } catch (e) {
    showError(errorBox, e.message);
  } finally {
    button.disabled = false;
  }
}

function seedFrom(input) {
  return Number($(input).value) >>> 0;
}

async function defaults(model, section) {
  // Fill a section's controls from its manifest's sample_defaults; a missing export disables it.
  try {
    const info = await call("info", { model });
    $(`${section}-note`).textContent = `${model}: ${info.runtime.kind}, manifest read from ${exportsBase}${model}/`;
    return info.runtime;
  } catch (e) {
    showError(`${section}-error`, `${e.message}. Train and export it first: make train-${model}`);
    return null;
  }
}

function setupGan(runtime) {
  const d = runtime.sample_defaults;
  $("gan-labels").value = d.labels;
  $("gan-per").value = Math.min(d.per_label, 10);
  const run = () => busy($("gan-go"), "gan-error", async () => {
    const r = await call("images", { model: "gan", labels: $("gan-labels").value, perLabel: Number($("gan-per").value), seed: seedFrom("gan-seed") });
    drawGrid($("gan-canvas"), r.pixels, r.dims, r.rows, r.cols);
  });
  $("gan-go").onclick = run;
  $("gan-new").onclick = () => { $("gan-seed").value = (Math.random() * 1e9) >>> 0; run(); };
}

function setupVae() {
  $("vae-go").onclick = () => busy($("vae-go"), "vae-error", async () => {
    const r = await call("images", { model: "vae", labels: 8, perLabel: 8, seed: seedFrom("vae-seed") });
    drawGrid($("vae-canvas"), r.pixels, r.dims, r.rows, r.cols);
  });
  $("vae-lerp").onclick = () => busy($("vae-lerp"), "vae-error", async () => {
    const r = await call("interpolate", { model: "vae", seed: seedFrom("vae-seed"), rows: 4, steps: 10 });
    drawGrid($("vae-canvas"), r.pixels, r.dims, r.rows, r.cols);
  });
  $("vae-new").onclick = () => { $("vae-seed").value = (Math.random() * 1e9) >>> 0; $("vae-go").click(); };
}

function setupDiffusion(runtime) {
  const d = runtime.sample_defaults;
  $("diff-labels").value = d.labels;
  $("diff-steps").value = Math.min(d.steps, 50);
  $("diff-guidance").value = d.guidance;
  const show = () => { $("diff-steps-out").textContent = $("diff-steps").value; $("diff-guidance-out").textContent = $("diff-guidance").value; };
  $("diff-steps").oninput = $("diff-guidance").oninput = show;
  show();
  $("diff-go").onclick = () => busy($("diff-go"), "diff-error", async () => {
    const labels = $("diff-labels").value, perLabel = Number($("diff-per").value);
    const rows = labels.split(",").filter((s) => s.trim()).length;
    const r = await call("diffusion", { labels, perLabel, steps: Number($("diff-steps").value),
      guidance: Number($("diff-guidance").value), seed: seedFrom("diff-seed") }, (p) => {
      $("diff-progress").value = p.step / p.total;
      $("diff-progress-text").textContent = `step ${p.step} of ${p.total}: the predicted clean images`;
      drawGrid($("diff-canvas"), p.pixels, [0, runtime.height, runtime.width], rows, perLabel);
    });
    drawGrid($("diff-canvas"), r.pixels, r.dims, r.rows, r.cols);
    $("diff-progress-text").textContent = `done: ${Number($("diff-steps").value)} DDIM steps`;
  });
}

function setupText() {
  const fill = async () => {
    const runtime = await defaults($("text-model").value, "text");
    if (!runtime) return;
    const d = runtime.sample_defaults;
    $("text-prompt").value = d.prompt;
    $("text-temperature").value = d.temperature;
    $("text-topk").value = d.top_k;
  };
  $("text-model").onchange = fill;
  $("text-go").onclick = () => busy($("text-go"), "text-error", async () => {
    const out = $("text-out");
    out.textContent = $("text-prompt").value;
    const r = await call("text", { model: $("text-model").value, prompt: $("text-prompt").value,
      length: Number($("text-length").value), temperature: Number($("text-temperature").value),
      topK: Number($("text-topk").value), seed: seedFrom("text-seed") }, (p) => { out.textContent += p.text; });
    out.textContent = r.text;
    $("text-note").textContent = `${r.text.length - $("text-prompt").value.length} characters in ${r.seconds.toFixed(1)} s`;
  });
  return fill();
}

function setupSpeech(runtime) {
  const d = runtime.sample_defaults;
  $("speech-temperature").value = d.temperature;
  $("speech-mel-temperature").value = d.mel_temperature;
  $("speech-go").onclick = () => busy($("speech-go"), "speech-error", async () => {
    const r = await call("speech", { digits: $("speech-digit").value, seconds: d.seconds,
      temperature: Number($("speech-temperature").value), melTemperature: Number($("speech-mel-temperature").value),
      seed: seedFrom("speech-seed") }, (p) => {
      $("speech-progress").value = p.done / p.total;
      $("speech-progress-text").textContent = `${p.what}: ${p.done} of ${p.total}`;
    });
    const clip = r.clips[0];
    drawWave($("speech-canvas"), clip);
    $("speech-progress-text").textContent = `${(clip.length / r.sampleRate).toFixed(2)} s of audio in ${r.seconds.toFixed(1)} s`;
    const link = $("speech-download");
    if (link.href) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(wavBlob(clip, r.sampleRate));
    link.download = `digit_${r.digits[0]}.wav`;
    link.hidden = false;
    $("speech-play").disabled = false;
    $("speech-play").onclick = () => play(clip, r.sampleRate);
    play(clip, r.sampleRate);
  });
}

// --- Start -----------------------------------------------------------------------------------

const plain = (value) => (ArrayBuffer.isView(value) ? Array.from(value) : value);

async function main() {
  if (typeof WebAssembly !== "object") {
    showError("status-error", "This browser has no WebAssembly: onnxruntime-web cannot run the models here.");
    return;
  }
  if (typeof Worker !== "function") {
    showError("status-error", "This browser has no Web Workers: the page cannot sample without freezing.");
    return;
  }
  const { threads } = await startWorker();
  $("status").textContent = `onnxruntime-web (WebAssembly, ${threads} thread${threads > 1 ? "s" : ""}); exports from ${exportsBase}`;
  // The test hook: the same tasks with fixed inputs; typed arrays come back as plain arrays.
  window.zooTest = {
    call: async (task, p) => {
      const r = await call(task, p);
      return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Array.isArray(v) ? v.map(plain) : plain(v)]));
    },
    openAll: async (models) => {
      const out = {};
      for (const model of models) {
        try {
          out[model] = (await call("open", { model })).checked;
        } catch (e) {
          throw new Error(`${model}: ${e.message}`);
        }
      }
      return out;
    },
  };
  const [gan, , diffusion, , speech] = await Promise.all([
    defaults("gan", "gan"), defaults("vae", "vae"), defaults("diffusion", "diff"), setupText(), defaults("wavenet", "speech"),
  ]);
  if (gan) setupGan(gan);
  setupVae();
  if (diffusion) setupDiffusion(diffusion);
  if (speech) setupSpeech(speech);
  document.body.dataset.ready = "true";
}

main().catch((e) => showError("status-error", `The page could not start: ${e.message}`));
