// The zoo's samplers in JavaScript: ports of zoo/runtime/ (images.py, diffusion.py, text.py,
// audio.py) around onnxruntime-web sessions. No DOM here: the Web Worker (worker.js) runs these
// loops so the page stays responsive. Every shape, name, vocabulary and default is read from the
// export's manifest.json, as zoo.runtime does.

// --- Random numbers (seeded; the page's own generator, not numpy's) ------------------------------

export function rng(seed) {
  // mulberry32: a small 32-bit generator; uniform() in (0, 1).
  let a = (seed >>> 0) ^ 0x9e3779b9;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  const gumbel = () => -Math.log(-Math.log(uniform()));
  return { uniform, normal, gumbel };
}

export function normals(random, n) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = random.normal();
  return out;
}

// --- Exports ---------------------------------------------------------------------------------

export class ExportError extends Error {}

// --- Arguments (zoo.runtime.core's check_count, check_number and Export.check_call) --------------

// One call's inputs, outputs and largest intermediate at most (zoo.runtime's default; a WebAssembly
// page has 4 GiB in all).
export const MAX_CALL_BYTES = 2 ** 30;

export function checkCount(name, value, min = 0, max = Infinity) {
  if (typeof value !== "number" || !Number.isInteger(value)) throw new ExportError(`${name} must be a whole number, got ${JSON.stringify(value)}`);
  if (value < min || value > max) throw new ExportError(`${name} must be ${max === Infinity ? `>= ${min}` : `from ${min} to ${max}`}, got ${value}`);
  return value;
}

export function checkNumber(name, value, min = -Infinity, max = Infinity) {
  if (typeof value !== "number") throw new ExportError(`${name} must be a number, got ${JSON.stringify(value)}`);
  if (!Number.isFinite(value) || value < min || value > max) {
    const bounds = [min > -Infinity ? `>= ${min}` : "", max < Infinity ? `<= ${max}` : ""].filter(Boolean).join(" ");
    throw new ExportError(`${name} must be a finite number${bounds ? " " + bounds : ""}, got ${value}`);
  }
  return value;
}

export function dimension(d, sizes) {
  // A manifest dimension: a size, or an expression ("batch*frames + 6") of +, -, *, // over names and integers.
  if (typeof d === "number") return d;
  const tokens = String(d).match(/\/\/|[A-Za-z_][A-Za-z0-9_]*|\d+|[+\-*()]|\S/g) || [];
  let at = 0;
  const atom = () => {
    const t = tokens[at++];
    if (t === "(") { const v = sum(); at++; return v; }
    if (/^\d+$/.test(t)) return Number(t);
    if (/^[A-Za-z_]/.test(t)) return sizes[t] ?? 1;
    throw new ExportError(`the manifest's dimension ${JSON.stringify(d)} is not an expression this page reads`);
  };
  const product = () => {
    let v = atom();
    while (tokens[at] === "*" || tokens[at] === "//") v = tokens[at++] === "*" ? v * atom() : Math.floor(v / atom());
    return v;
  };
  const sum = () => {
    let v = product();
    while (tokens[at] === "+" || tokens[at] === "-") v = tokens[at++] === "+" ? v + product() : v - product();
    return v;
  };
  return Math.max(0, sum());
}

async function fetchOk(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new ExportError(`${what} could not be fetched from ${url}: ${e.message}`);
  }
  if (!response.ok) throw new ExportError(`${what} not found at ${url} (HTTP ${response.status})`);
  return response;
}

async function sha256(bytes) {
  if (!(globalThis.crypto && crypto.subtle)) return null; // not a secure context: cannot check
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Export {
  // An exports/<model>/ folder served over HTTP: its manifest and lazily created sessions.
  constructor(ort, base, manifest) {
    this.ort = ort;
    this.base = base;
    this.manifest = manifest;
    this.runtime = manifest.runtime;
    this.sessions = {};
    this.checked = {}; // graph name -> "sha256 ok" | "not checked (no crypto.subtle)"
  }

  static async load(ort, base) {
    const response = await fetchOk(`${base}/manifest.json`, "manifest.json");
    let manifest;
    try {
      manifest = await response.json();
    } catch (e) {
      throw new ExportError(`${base}/manifest.json is not valid JSON: ${e.message}`);
    }
    return new Export(ort, base, manifest);
  }

  graph(name) {
    const graph = this.manifest.graphs[name];
    if (!graph) throw new ExportError(`no graph ${name} in ${this.base}`);
    return graph;
  }

  checkCall(name, sizes) {
    // Refuses a call of graph `name` at `sizes` ({batch: 64, ...}) whose inputs, outputs and largest
    // intermediate would take more than MAX_CALL_BYTES, before anything is allocated.
    const graph = this.graph(name);
    const bytes = (spec, size) => size * spec.shape.reduce((n, d) => n * dimension(d, sizes), 1);
    const itemsize = (dtype) => ({ float32: 4, int32: 4, int64: 8, uint8: 1, bool: 1 }[dtype] ?? 8);
    let total = 0;
    for (const spec of [...graph.inputs, ...graph.outputs]) total += bytes(spec, itemsize(spec.dtype));
    total += Math.max(0, ...(graph.intermediates || []).map((spec) => bytes(spec, spec.bytes)));
    if (total > MAX_CALL_BYTES) {
      const at = Object.entries(sizes).map(([k, v]) => `${k} ${v}`).join(", ");
      throw new ExportError(`graph ${name} at ${at} needs ${(total / 2 ** 20).toFixed(1)} MiB, over the page's limit of ` +
        `${MAX_CALL_BYTES / 2 ** 20} MiB a call: ask for fewer`);
    }
  }

  async session(name) {
    if (!this.sessions[name]) {
      const file = this.graph(name).onnx;
      const bytes = await (await fetchOk(`${this.base}/${file}`, file)).arrayBuffer();
      const listed = (this.manifest.files || {})[file];
      const digest = await sha256(bytes);
      if (listed && digest !== null && (digest !== listed.sha256 || bytes.byteLength !== listed.bytes)) {
        throw new ExportError(`${this.base}/${file} does not match its sha256 in manifest.json (corrupt or modified)`);
      }
      this.checked[name] = digest === null ? "not checked (no crypto.subtle)" : "sha256 ok";
      this.sessions[name] = await this.ort.InferenceSession.create(new Uint8Array(bytes), {
        executionProviders: ["wasm"],
        graphOptimizationLevel: "all",
      });
    }
    return this.sessions[name];
  }

  tensor(graphName, inputName, data, dims) {
    const spec = this.graph(graphName).inputs.find((s) => s.name === inputName);
    const dtype = spec ? spec.dtype : "float32";
    if (dtype === "int64") return new this.ort.Tensor("int64", BigInt64Array.from(data, (v) => BigInt(v)), dims);
    if (dtype === "int32") return new this.ort.Tensor("int32", Int32Array.from(data), dims);
    return new this.ort.Tensor("float32", data instanceof Float32Array ? data : Float32Array.from(data), dims);
  }

  async run(name, feeds) {
    // feeds: {input: [data, dims] or an ort.Tensor} -> {output: ort.Tensor}
    const session = await this.session(name);
    const tensors = {};
    for (const [key, value] of Object.entries(feeds)) {
      tensors[key] = value instanceof this.ort.Tensor ? value : this.tensor(name, key, value[0], value[1]);
    }
    return session.run(tensors);
  }
}

export function parseClasses(text, numClasses, what = "labels") {
  const parts = String(text).split(",").map((p) => p.trim()).filter((p) => p.length);
  const values = parts.map(Number);
  if (!values.length || values.some((v) => !Number.isInteger(v) || v < 0 || v >= numClasses)) {
    throw new ExportError(`${what} must be integers in 0..${numClasses - 1} separated by commas, got "${text}"`);
  }
  return values;
}

// --- Sampling from logits (zoo.runtime.core.sample_logits) -----------------------------------

export function argmax(row) {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

export function sampleLogits(row, temperature, topK, random) {
  // One id from logits `row`: softmax at `temperature` over the `topK` best (0: all); 0 = greedy.
  if (temperature === 0) return argmax(row);
  const z = Array.from(row, (v) => v / temperature);
  if (topK > 0 && topK < z.length) {
    const kth = [...z].sort((a, b) => b - a)[topK - 1];
    for (let i = 0; i < z.length; i++) if (z[i] < kth) z[i] = -Infinity;
  }
  const top = Math.max(...z);
  const cdf = new Float64Array(z.length);
  let total = 0;
  for (let i = 0; i < z.length; i++) cdf[i] = total += Math.exp(z[i] - top);
  const u = random.uniform() * total;
  let id = 0;
  while (id < z.length - 1 && cdf[id] < u) id++;
  return id;
}

// --- Images: gan, vae (zoo.runtime.images) ---------------------------------------------------

export async function generateImages(exp, labels, z) {
  // One image per label from latent rows `z` (Float32Array [N * latent_dim]): {raw, pixels [0,1], dims}.
  const info = exp.runtime;
  const n = labels.length;
  const feeds = { z: [z, [n, info.latent_dim]] };
  if (info.conditional) feeds.label = [labels, [n]];
  const out = (await exp.run(info.graph, feeds))[info.output || "image"];
  const [low, high] = info.output_range;
  const pixels = Float32Array.from(out.data, (v) => Math.min(1, Math.max(0, (v - low) / (high - low))));
  return { raw: out.data, pixels, dims: out.dims };
}

export function slerpRow(a, b, steps) {
  // Latents on the great circle from a to b (spherical interpolation, as Gaussian latents prefer).
  const dot = a.reduce((s, v, i) => s + v * b[i], 0);
  const norms = Math.hypot(...a) * Math.hypot(...b);
  const omega = Math.acos(Math.min(1, Math.max(-1, dot / norms)));
  const out = new Float32Array(steps * a.length);
  for (let s = 0; s < steps; s++) {
    const t = steps === 1 ? 0 : s / (steps - 1);
    const wa = omega < 1e-6 ? 1 - t : Math.sin((1 - t) * omega) / Math.sin(omega);
    const wb = omega < 1e-6 ? t : Math.sin(t * omega) / Math.sin(omega);
    for (let i = 0; i < a.length; i++) out[s * a.length + i] = wa * a[i] + wb * b[i];
  }
  return out;
}

// --- Diffusion: DDIM with classifier-free guidance (zoo.runtime.diffusion) -------------------

export function betas(kind, steps) {
  if (kind === "linear") {
    const scale = 1000 / steps, lo = scale * 1e-4, hi = scale * 0.02;
    return Array.from({ length: steps }, (_, i) => (steps === 1 ? lo : lo + (i * (hi - lo)) / (steps - 1)));
  }
  if (kind === "cosine") {
    const s = 0.008;
    const f = Array.from({ length: steps + 1 }, (_, i) => Math.cos(((i / steps + s) / (1 + s)) * Math.PI / 2) ** 2);
    return Array.from({ length: steps }, (_, i) => Math.min(0.999, Math.max(0, 1 - f[i + 1] / f[i])));
  }
  throw new ExportError(`unknown noise schedule ${kind}`);
}

export function alphaBar(schedule) {
  let product = 1;
  return betas(schedule.kind, schedule.steps).map((b) => (product *= 1 - b));
}

function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function ddimTimesteps(total, steps) {
  if (!(steps >= 1 && steps <= total)) throw new ExportError(`steps must be in 1..${total}, got ${steps}`);
  const step = steps === 1 ? 0 : (total - 1) / (steps - 1);
  const times = new Set();
  for (let i = 0; i < steps; i++) times.add(i === steps - 1 && steps > 1 ? total - 1 : roundHalfEven(i * step));
  return [...times].sort((a, b) => b - a);
}

export async function ddim(exp, labels, noise, { steps, guidance, eta = 0, random = null, onStep = null }) {
  // DDIM from x_T = `noise` (Float32Array [N*H*W]); x_0 clipped to [-1, 1] at each step, as
  // zoo.runtime.diffusion.ddim_sample does. onStep(i, total, x0) after every denoiser call.
  const info = exp.runtime;
  const n = labels.length, size = info.height * info.width, dims = [n, info.height, info.width, 1];
  const abar = alphaBar(info.schedule);
  const times = ddimTimesteps(info.schedule.steps, steps);
  const guide = info.conditional && guidance !== 1;
  let x = Float64Array.from(noise);
  const x0 = new Float64Array(n * size);
  for (let i = 0; i < times.length; i++) {
    const t = times[i];
    const xs = Float32Array.from(x);
    let eps;
    if (guide) {
      const both = new Float32Array(2 * n * size);
      both.set(xs);
      both.set(xs, n * size);
      const label = [...labels, ...labels.map(() => info.null_label)];
      const out = (await exp.run(info.graph, { x_t: [both, [2 * n, info.height, info.width, 1]],
        t: [new Array(2 * n).fill(t), [2 * n]], label: [label, [2 * n]] }))[info.output].data;
      eps = new Float64Array(n * size);
      for (let j = 0; j < n * size; j++) eps[j] = out[n * size + j] + guidance * (out[j] - out[n * size + j]);
    } else {
      const feeds = { x_t: [xs, dims], t: [new Array(n).fill(t), [n]] };
      if (info.conditional) feeds.label = [labels, [n]];
      eps = Float64Array.from((await exp.run(info.graph, feeds))[info.output].data);
    }
    const aT = abar[t], aPrev = i + 1 < times.length ? abar[times[i + 1]] : 1.0;
    const sigma = eta * Math.sqrt(((1 - aPrev) / (1 - aT)) * (1 - aT / aPrev));
    const keep = Math.sqrt(Math.max(1 - aPrev - sigma * sigma, 0));
    for (let j = 0; j < n * size; j++) {
      let p = (x[j] - Math.sqrt(1 - aT) * eps[j]) / Math.sqrt(aT);
      p = Math.min(1, Math.max(-1, p));
      const e = (x[j] - Math.sqrt(aT) * p) / Math.sqrt(1 - aT);
      x0[j] = p;
      x[j] = Math.sqrt(aPrev) * p + keep * e;
      if (eta > 0 && i + 1 < times.length) x[j] += sigma * random.normal();
    }
    if (onStep) await onStep(i + 1, times.length, x0);
  }
  return Float32Array.from(x, (v) => Math.min(1, Math.max(-1, v)));
}

// --- Text: lstm (recurrent state), transformer (key/value cache) (zoo.runtime.text) -----------

export function encode(text, vocabulary) {
  const unknown = [...new Set([...text].filter((c) => !vocabulary.includes(c)))];
  if (unknown.length) throw new ExportError(`characters not in the model's vocabulary: ${JSON.stringify(unknown.join(""))}`);
  if (!text.length) throw new ExportError("the prompt must have at least one character");
  return [...text].map((c) => vocabulary.indexOf(c));
}

export async function sampleText(exp, prompt, length, temperature, topK, random, onChar) {
  // One continuation of `prompt` (`length` new characters), streamed by onChar(char).
  const info = exp.runtime;
  const vocabulary = info.vocabulary;
  const ids = encode(prompt, vocabulary);
  if (info.kind === "text-cached") return sampleCached(exp, ids, length, temperature, topK, random, onChar);
  if (info.kind !== "text-recurrent") throw new ExportError(`${exp.base} holds a ${info.kind} model, not a text model`);
  const graph = info.graph;
  const specs = Object.fromEntries(exp.graph(graph).inputs.map((s) => [s.name, s]));
  const feeds = { tokens: [ids, [1, ids.length]] };
  for (const name of Object.keys(info.state)) feeds[name] = [new Float32Array(specs[name].shape[1]), [1, specs[name].shape[1]]];
  let out = await exp.run(graph, feeds);
  let text = prompt;
  for (let i = 0; i < length; i++) {
    const logits = out.logits;
    const v = logits.dims[2];
    const row = logits.data.subarray(logits.data.length - v);
    const id = sampleLogits(row, temperature, topK, random);
    text += vocabulary[id];
    if (onChar) await onChar(vocabulary[id]);
    const next = { tokens: [[id], [1, 1]] };
    for (const [name, nextName] of Object.entries(info.state)) next[name] = out[nextName];
    out = await exp.run(graph, next);
  }
  return text;
}

async function sampleCached(exp, promptIds, length, temperature, topK, random, onChar) {
  const info = exp.runtime;
  const { vocabulary, max_context: limit, graph } = info;
  if (info.cache !== "in-place") {
    throw new ExportError(`this page samples decoders whose cache is written in place; ${exp.base} was made ` +
      "before that: export it again (python -m zoo export)");
  }
  const layers = [...Array(info.num_layers).keys()];
  const pastNames = layers.flatMap((i) => ["key", "value"].map((kind) => info.past.replace("{i}", i).replace("{kind}", kind)));
  const presentNames = layers.flatMap((i) => ["key", "value"].map((kind) => info.present.replace("{i}", i).replace("{kind}", kind)));
  // The graph's cache has a fixed capacity (max_context positions) and a call writes its new keys and
  // values at position_ids, so a prefill starts from zeros and each step feeds back the presents.
  const zeros = new exp.ort.Tensor("float32", new Float32Array(info.num_heads * limit * info.head_dim),
    [1, info.num_heads, limit, info.head_dim]);
  const history = [...promptIds];

  const prefill = async (ids) => {
    const feeds = { input_ids: [ids, [1, ids.length]], position_ids: [ids.map((_, i) => i), [1, ids.length]] };
    for (const name of pastNames) feeds[name] = zeros;
    return exp.run(graph, feeds);
  };
  const lastRow = (out) => out.logits.data.subarray(out.logits.data.length - out.logits.dims[2]);
  const cacheOf = (out) => Object.fromEntries(pastNames.map((p, j) => [p, out[presentNames[j]]]));

  const filled = Math.min(promptIds.length, limit);
  let out = await prefill(promptIds.slice(promptIds.length - filled));
  let logits = lastRow(out), cache = cacheOf(out), position = filled;
  let text = promptIds.map((i) => vocabulary[i]).join("");
  for (let i = 0; i < length; i++) {
    const id = sampleLogits(logits, temperature, topK, random);
    history.push(id);
    text += vocabulary[id];
    if (onChar) await onChar(vocabulary[id]);
    if (i + 1 === length) break;
    if (position === limit) { // the cache is full: re-read the last half of the context
      const keep = Math.floor(limit / 2);
      out = await prefill(history.slice(history.length - keep));
      logits = lastRow(out); cache = cacheOf(out); position = keep;
      continue;
    }
    out = await exp.run(graph, { input_ids: [[id], [1, 1]], position_ids: [[position], [1, 1]], ...cache });
    logits = lastRow(out); cache = cacheOf(out); position += 1;
  }
  return text;
}

// --- Audio: wavenet's prior and vocoder (zoo.runtime.audio) ----------------------------------

export function muLawDecode(codes, mu = 255) {
  return Float32Array.from(codes, (c) => {
    const x = (2 * c) / mu - 1;
    return (Math.sign(x) * Math.expm1(Math.abs(x) * Math.log1p(mu))) / mu;
  });
}

export async function sampleFrames(exp, digits, maxFrames, melTemperature, random, onFrame) {
  // The prior: {frames Float32Array [B, F, bins], frameCount F, lengths [B]} (audio.sample_frames).
  const info = exp.runtime;
  const bins = info.mel.bins, b = digits.length, h = info.prior_state;
  const silent = (info.mel.log_floor - info.mel.center) / info.mel.scale;
  let frame = new Float32Array(b * bins).fill(silent);
  let state = new Float32Array(b * h);
  const frames = new Float32Array(b * maxFrames * bins).fill(silent);
  const lengths = new Array(b).fill(maxFrames);
  const running = new Array(b).fill(true);
  for (let t = 0; t < maxFrames; t++) {
    const out = await exp.run(info.prior_graph, { frame: [frame, [b, bins]], digit: [digits, [b]], state: [state, [b, h]] });
    const k = info.mixtures, logits = out.mixture_logits.data, means = out.means.data, scales = out.log_scales.data;
    const stop = out.stop_logit.data;
    for (let i = 0; i < b; i++) {
      if (running[i] && stop[i] > 0 && t >= 1) { lengths[i] = t; running[i] = false; }
    }
    if (!running.some(Boolean)) break;
    state = out.next_state.data;
    frame = new Float32Array(b * bins);
    for (let i = 0; i < b; i++) {
      let c = 0;
      if (melTemperature <= 0) c = argmax(logits.subarray(i * k, i * k + k));
      else {
        let best = -Infinity;
        for (let j = 0; j < k; j++) {
          const g = logits[i * k + j] + random.gumbel();
          if (g > best) { best = g; c = j; }
        }
      }
      for (let m = 0; m < bins; m++) {
        const at = (i * k + c) * bins + m;
        const noise = melTemperature > 0 ? random.normal() * melTemperature : 0;
        frame[i * bins + m] = means[at] + Math.exp(scales[at]) * noise;
        if (running[i]) frames[(i * maxFrames + t) * bins + m] = frame[i * bins + m];
      }
    }
    if (onFrame) await onFrame(t + 1, maxFrames);
  }
  const used = Math.max(...lengths);
  const trimmed = new Float32Array(b * used * bins);
  for (let i = 0; i < b; i++) trimmed.set(frames.subarray(i * maxFrames * bins, (i * maxFrames + used) * bins), i * used * bins);
  return { frames: trimmed, frameCount: used, lengths };
}

export async function vocode(exp, condition, frameCount, digits, temperature, random, onProgress) {
  // The WaveNet one sample at a time: codes [B][samples] (audio.vocode), from silence.
  const info = exp.runtime;
  const b = digits.length, width = info.condition_channels, hop = info.mel.hop;
  const samples = frameCount * hop;
  const queues = {};
  info.dilations.forEach((d, i) => { queues[`queue.${i}`] = new exp.ort.Tensor("float32", new Float32Array(b * d * info.residual_channels), [b, d * info.residual_channels]); });
  let current = new Array(b).fill(info.first_input);
  const codes = Array.from({ length: b }, () => new Uint8Array(samples));
  let row = null;
  for (let t = 0; t < samples; t++) {
    if (t % hop === 0) {
      const f = t / hop, data = new Float32Array(b * width);
      for (let i = 0; i < b; i++) data.set(condition.subarray((i * frameCount + f) * width, (i * frameCount + f + 1) * width), i * width);
      row = new exp.ort.Tensor("float32", data, [b, width]);
    }
    const out = await exp.run(info.step_graph, { sample: [current, [b]], condition: row, ...queues });
    const logits = out.logits.data, classes = out.logits.dims[1];
    for (let i = 0; i < b; i++) {
      const r = logits.subarray(i * classes, (i + 1) * classes);
      let id = 0;
      if (temperature <= 0) id = argmax(r);
      else {
        let best = -Infinity;
        for (let j = 0; j < classes; j++) {
          const g = r[j] + temperature * random.gumbel();
          if (g > best) { best = g; id = j; }
        }
      }
      current[i] = id;
      codes[i][t] = id;
    }
    info.dilations.forEach((_, i) => { queues[`queue.${i}`] = out[`next_queue.${i}`]; });
    if (onProgress && t % hop === hop - 1) await onProgress(t + 1, samples);
  }
  return codes;
}

export async function generateSpeech(exp, digits, { seconds, temperature, melTemperature, random, onProgress }) {
  // Prior, then vocoder: one Float32Array clip per digit, each cut at its own end.
  const info = exp.runtime;
  const maxFrames = Math.ceil((seconds * info.sample_rate) / info.mel.hop);
  if (!(maxFrames >= 1 && maxFrames <= info.max_frames)) {
    throw new ExportError(`seconds must be in (0, ${(info.max_frames * info.mel.hop) / info.sample_rate}]`);
  }
  const prior = await sampleFrames(exp, digits, maxFrames, melTemperature, random,
    (f, total) => onProgress && onProgress("prior frames", f, total));
  const condition = (await exp.run(info.condition_graph, {
    mel: [prior.frames, [digits.length, prior.frameCount, info.mel.bins]], digit: [digits, [digits.length]],
  })).condition.data;
  const codes = await vocode(exp, condition, prior.frameCount, digits, temperature, random,
    (t, total) => onProgress && onProgress("vocoder samples", t, total));
  return codes.map((c, i) => muLawDecode(c.subarray(0, prior.lengths[i] * info.mel.hop)));
}
