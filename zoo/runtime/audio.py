"""Audio for `wavenet`: mu-law companding, cached sample-by-sample generation, `.wav` files.

numpy, onnxruntime and the standard library only. Training imports the mu-law functions from
here too, so the codes a model learns are the codes the runtime decodes.

Generation runs the exported `step` graph once per sample. Each layer's queue of past inputs is
an input and comes back, advanced by one, as an output; the loop keeps two sets of ONNX Runtime
buffers and swaps them each step (I/O binding), so no queue is copied through numpy.
"""

import wave
from pathlib import Path

import numpy as np

from zoo.runtime.core import Export, parse_classes, sample_logits

MU = 255  # 256 levels: the WaveNet paper's 8-bit mu-law
SHARED_BATCH = 8  # from this many streams on, the step graph runs on all of ONNX Runtime's threads


def mu_law_encode(audio: np.ndarray, mu: int = MU) -> np.ndarray:
    """Floats in [-1, 1] -> integer codes 0..mu (silence is mu // 2 + 1 = 128)."""
    x = np.clip(np.asarray(audio, np.float64), -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.floor((companded + 1.0) / 2.0 * mu + 0.5).astype(np.int32)


def mu_law_decode(codes: np.ndarray, mu: int = MU) -> np.ndarray:
    """Codes 0..mu -> floats in [-1, 1] (the inverse of `mu_law_encode` up to quantisation)."""
    companded = 2.0 * np.asarray(codes, np.float64) / mu - 1.0
    return (np.sign(companded) * np.expm1(np.abs(companded) * np.log1p(mu)) / mu).astype(np.float32)


SILENCE = int(mu_law_encode(np.zeros(1))[0])


def write_wav(path, audio: np.ndarray, sample_rate: int) -> Path:
    """Mono floats in [-1, 1] -> a 16-bit PCM `.wav`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path


def read_wav(path) -> tuple:
    """A 16-bit mono `.wav` -> (floats in [-1, 1], sample rate)."""
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2 or f.getnchannels() != 1:
            raise ValueError(f"{path}: expected 16-bit mono PCM")
        pcm = np.frombuffer(f.readframes(f.getnframes()), "<i2")
        return pcm.astype(np.float32) / 32768.0, f.getframerate()


class StepRunner:
    """Runs the `step` graph with its queues kept in ONNX Runtime buffers between calls."""

    def __init__(self, export: Export, batch: int, threads: int = None):
        import onnxruntime as ort

        info = export.runtime
        if threads is None:  # a single stream's step is too small to share between threads
            threads = 1 if batch < SHARED_BATCH else 0
        self.session = export.session(info["step_graph"], threads=threads)
        self.queue_names = [f"queue.{i}" for i in range(len(info["dilations"]))]
        device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"

        def zeros(shape):
            return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32), device, 0)

        channels = info["residual_channels"]
        buffers = [[zeros((batch, d * channels)) for d in info["dilations"]] for _ in range(2)]
        # Inputs and the logits output wrap these numpy arrays (no copies on the CPU): writing
        # `sample` and reading `logits` needs no call into ONNX Runtime.
        self._sample, self._digit = np.zeros(batch, np.int32), np.zeros(batch, np.int32)
        self._logits = np.zeros((batch, 256), np.float32)
        wrap = ort.OrtValue.ortvalue_from_numpy
        sample, digit, logits = wrap(self._sample), wrap(self._digit), wrap(self._logits)
        if device != "cpu":  # on a GPU, ONNX Runtime copies through its own buffers
            sample, digit, logits = (ort.OrtValue.ortvalue_from_numpy(a, device, 0)
                                     for a in (self._sample, self._digit, self._logits))
        self._device_values = (sample, digit, logits)
        self._on_cpu = device == "cpu"
        self.bindings = []
        for source, target in ((buffers[0], buffers[1]), (buffers[1], buffers[0])):
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("sample", sample)
            binding.bind_ortvalue_input("digit", digit)
            binding.bind_ortvalue_output("logits", logits)
            for name, queue, next_queue in zip(self.queue_names, source, target):
                binding.bind_ortvalue_input(name, queue)
                binding.bind_ortvalue_output("next_" + name, next_queue)
            self.bindings.append(binding)
        self.steps = 0

    def __call__(self, sample: np.ndarray, digit: np.ndarray) -> np.ndarray:
        """Logits [B, 256] for the next sample, given this one; advances the queues.

        The returned array is overwritten by the next call: copy it to keep it.
        """
        self._sample[:] = sample
        self._digit[:] = digit
        sample_value, digit_value, logits_value = self._device_values
        if not self._on_cpu:
            sample_value.update_inplace(self._sample)
            digit_value.update_inplace(self._digit)
        self.session.run_with_iobinding(self.bindings[self.steps % 2])
        self.steps += 1
        return self._logits if self._on_cpu else logits_value.numpy()


def _gumbel_sampler(rng, batch, temperature, top_k, chunk=4096):
    """next(logits) -> ids: softmax sampling at `temperature` by the Gumbel-max trick, with the
    noise drawn in chunks (a few microseconds a step instead of a cumulative sum)."""
    if temperature <= 0 or top_k:
        while True:
            yield lambda logits: sample_logits(logits, temperature, top_k, rng)
    while True:
        noise = rng.gumbel(size=(chunk, batch, 256)).astype(np.float32) * np.float32(temperature)
        for row in noise:
            yield lambda logits, row=row: np.argmax(logits + row, axis=-1)


def generate(export: Export, digits="7", seconds: float = 1.0, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0) -> np.ndarray:
    """One clip per requested digit, generated together: floats [len(digits), samples] in [-1, 1]."""
    info = export.runtime
    if info.get("kind") != "audio-generator":
        raise ValueError(f"{export.path} holds a {info.get('kind')!r} model, not an audio generator")
    digits = parse_classes(digits, info["num_classes"], "digits")
    length = int(round(seconds * info["sample_rate"]))
    if length < 1:
        raise ValueError(f"seconds must give at least one sample, got {seconds}")
    if temperature < 0 or top_k < 0:
        raise ValueError(f"temperature and top_k must be >= 0, got {temperature}, {top_k}")
    rng = np.random.default_rng(seed)
    step = StepRunner(export, len(digits))
    samplers = _gumbel_sampler(rng, len(digits), temperature, top_k)
    codes = np.empty((len(digits), length), np.int32)
    current = np.full(len(digits), SILENCE, np.int32)  # the clip starts from silence, as in training
    for t in range(length):
        # argmax(logits / T + g) = argmax(logits + T g): a softmax draw at temperature T
        current = next(samplers)(step(current, digits))
        codes[:, t] = current
    return mu_law_decode(codes)


def write_clips(export: Export, folder, digits="0,1,2,3,4,5,6,7,8,9", seconds: float = 1.0,
                temperature: float = 1.0, seed: int = 0) -> list:
    """Generate one clip per digit and write `digit_<d>.wav` files into `folder`: the paths."""
    digits = parse_classes(digits, export.runtime["num_classes"], "digits")
    clips = generate(export, digits, seconds, temperature, seed=seed)
    return [write_wav(Path(folder) / f"digit_{d}.wav", clip, export.runtime["sample_rate"])
            for d, clip in zip(digits, clips)]
