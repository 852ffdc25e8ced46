// The page's Web Worker: loads exports and runs the sampling loops off the main thread.
// Messages in: {id, task, params}; out: {id, type: "progress" | "result" | "error", ...}.
import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import * as zoo from "./zoo.js";

ort.env.wasm.wasmPaths = new URL("./node_modules/onnxruntime-web/dist/", import.meta.url).href;
// Threads need a cross-origin isolated page (serve.py sends the headers); one thread otherwise.
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
ort.env.logLevel = "error";

const exports = {};
let exportsBase = null;
let queue = Promise.resolve();

async function load(model) {
  if (!exports[model]) exports[model] = zoo.Export.load(ort, `${exportsBase}${model}`);
  try {
    return await exports[model];
  } catch (e) {
    delete exports[model]; // a later try (after `make train-<model>`) fetches again
    throw e;
  }
}

function latents(random, n, dim, given) {
  if (given) {
    if (given.length !== n * dim) throw new zoo.ExportError(`z must hold ${n} x ${dim} numbers, got ${given.length}`);
    return Float32Array.from(given);
  }
  return zoo.normals(random, n * dim);
}

const tasks = {
  async info({ model }) {
    const exp = await load(model);
    return { model: exp.manifest.model, runtime: exp.runtime, metrics: exp.manifest.metrics || {} };
  },

  async open({ model }) { // every graph's session (sha256 checked): what the page can run of this export
    const exp = await load(model);
    for (const name of Object.keys(exp.manifest.graphs)) await exp.session(name);
    return { checked: exp.checked };
  },

  async images({ model, labels, perLabel, seed, z }, progress) {
    const exp = await load(model);
    const info = exp.runtime;
    zoo.checkCount("perLabel", perLabel, 1);
    zoo.checkCount("seed", seed);
    const classes = info.conditional ? zoo.parseClasses(labels, info.num_classes)
      : [...Array(zoo.checkCount("labels", labels === undefined ? 1 : Number(labels), 1)).keys()];
    exp.checkCall(info.graph, { batch: classes.length * perLabel });
    const flat = classes.flatMap((c) => new Array(perLabel).fill(c));
    const random = zoo.rng(seed);
    const result = await zoo.generateImages(exp, flat, latents(random, flat.length, info.latent_dim, z));
    return { ...result, rows: classes.length, cols: perLabel, checked: exp.checked };
  },

  async interpolate({ model, seed, rows, steps }) {
    const exp = await load(model);
    zoo.checkCount("seed", seed);
    zoo.checkCount("rows", rows, 1);
    zoo.checkCount("steps", steps, 2);
    exp.checkCall(exp.runtime.graph, { batch: rows * steps });
    const dim = exp.runtime.latent_dim, random = zoo.rng(seed);
    const z = new Float32Array(rows * steps * dim);
    for (let r = 0; r < rows; r++) z.set(zoo.slerpRow(zoo.normals(random, dim), zoo.normals(random, dim), steps), r * steps * dim);
    const result = await zoo.generateImages(exp, new Array(rows * steps).fill(0), z);
    return { ...result, rows, cols: steps, checked: exp.checked };
  },

  async diffusion({ model = "diffusion", labels, perLabel, steps, guidance, eta = 0, seed, noise }, progress) {
    const exp = await load(model);
    const info = exp.runtime;
    const classes = zoo.parseClasses(labels, info.num_classes);
    zoo.checkCount("perLabel", perLabel, 1);
    zoo.checkCount("seed", seed);
    zoo.checkCount("steps", steps, 1, info.schedule.steps);
    zoo.checkNumber("guidance", guidance);
    zoo.checkNumber("eta", eta, 0);
    exp.checkCall(info.graph, { batch: 2 * classes.length * perLabel }); // guidance runs two batches together
    const flat = classes.flatMap((c) => new Array(perLabel).fill(c));
    const random = zoo.rng(seed);
    const size = flat.length * info.height * info.width;
    if (noise && noise.length !== size) throw new zoo.ExportError(`noise must hold ${size} numbers, got ${noise.length}`);
    const x = noise ? Float32Array.from(noise) : zoo.normals(random, size);
    const onStep = (i, total, x0) => progress({ step: i, total, pixels: Float32Array.from(x0, (v) => (v + 1) / 2) });
    const raw = await zoo.ddim(exp, flat, x, { steps, guidance, eta, random, onStep });
    const pixels = Float32Array.from(raw, (v) => (v + 1) / 2);
    return { raw, pixels, dims: [flat.length, info.height, info.width, 1], rows: classes.length, cols: perLabel,
             checked: exp.checked };
  },

  async text({ model, prompt, length, temperature, topK, seed }, progress) {
    const exp = await load(model);
    if (typeof prompt !== "string") throw new zoo.ExportError(`the prompt must be a string, got ${JSON.stringify(prompt)}`);
    zoo.checkCount("length", length, 0, 1 << 24);
    zoo.checkNumber("temperature", temperature, 0);
    zoo.checkCount("topK", topK);
    zoo.checkCount("seed", seed);
    const info = exp.runtime;
    exp.checkCall(info.graph, info.kind === "text-cached"
      ? { batch: 1, sequence: Math.min(prompt.length, info.max_context), capacity: info.max_context }
      : { batch: 1, time: prompt.length });
    let pending = "", last = performance.now();
    const onChar = (c) => { // stream in small batches: a message a character would flood the page
      pending += c;
      if (performance.now() - last > 50) { progress({ text: pending }); pending = ""; last = performance.now(); }
    };
    const started = performance.now();
    const text = await zoo.sampleText(exp, prompt, length, temperature, topK, zoo.rng(seed), onChar);
    if (pending) progress({ text: pending });
    return { text, seconds: (performance.now() - started) / 1000, checked: exp.checked };
  },

  async speech({ model = "wavenet", digits, seconds, temperature, melTemperature, seed }, progress) {
    const exp = await load(model);
    const info = exp.runtime;
    const wanted = zoo.parseClasses(digits, info.num_classes, "digits");
    zoo.checkNumber("seconds", seconds);
    zoo.checkNumber("temperature", temperature, 0);
    zoo.checkNumber("melTemperature", melTemperature, 0);
    zoo.checkCount("seed", seed);
    for (const graph of [info.step_graph, info.prior_graph]) exp.checkCall(graph, { batch: wanted.length });
    exp.checkCall(info.condition_graph, { batch: wanted.length, frames: info.max_frames });
    let last = 0;
    const onProgress = (what, done, total) => {
      const now = performance.now();
      if (now - last > 100 || done === total) { last = now; progress({ what, done, total }); }
    };
    const started = performance.now();
    const clips = await zoo.generateSpeech(exp, wanted, { seconds, temperature, melTemperature, random: zoo.rng(seed), onProgress });
    return { clips, digits: wanted, sampleRate: info.sample_rate, seconds: (performance.now() - started) / 1000,
             checked: exp.checked };
  },
};

self.onmessage = async ({ data }) => {
  const { id, task, params } = data;
  if (task === "configure") {
    exportsBase = params.exportsBase;
    self.postMessage({ id, type: "result", result: { threads: ort.env.wasm.numThreads } });
    return;
  }
  const progress = (value) => self.postMessage({ id, type: "progress", ...value });
  // One task at a time: a session must not run two calls at once, and the loops share the CPU.
  queue = queue.then(async () => {
    try {
      if (!tasks[task]) throw new Error(`unknown task ${task}`);
      self.postMessage({ id, type: "result", result: await tasks[task](params, progress) });
    } catch (e) {
      self.postMessage({ id, type: "error", message: e.message || String(e) });
    }
  });
};
