"""Audio for `wavenet`: mu-law codes, log-mel frames, two-stage generation, `.wav` files.

numpy, onnxruntime and the standard library only. Training imports the mu-law and mel functions
from here too, so the codes and frames a model learns are the ones the runtime makes and reads.

Generation has two stages (see zoo/models/wavenet/):
  1. the prior's `prior_step` graph, once per 16 ms frame: a digit-conditioned causal transformer
     (its key/value cache carried in `state` -> `next_state`) that gives a mixture of Gaussians over
     the next log-mel frame and the chance that the word has ended; `sample_frames` draws frames
     until it ends.
  2. the vocoder: `condition` once per clip turns the frames into every layer's conditioning,
     then `step` runs once per sample. Each layer's queue of past inputs is an input and comes
     back, advanced by one, as an output; `StepRunner` keeps two sets of ONNX Runtime buffers and
     swaps them each step (I/O binding), so no queue is copied through numpy.
The sampling loops take plain callables, so the Keras evaluation runs the very same loops on the
Keras networks (`generate_clips`). `griffin_lim` turns frames into audio without a network (phase
reconstruction): `vocoder="griffin-lim"` uses it in place of the WaveNet.
"""

import wave
from pathlib import Path

import numpy as np

from zoo.runtime.core import Export, Progress, check_count, check_number, parse_classes, sample_logits

MU = 255  # 256 levels: the WaveNet paper's 8-bit mu-law
SHARED_BATCH = 8  # from this many streams on, the step graph runs on all of ONNX Runtime's threads

# Log-mel frames: a 256-sample (32 ms) Hann window every 128 samples (16 ms at 8 kHz), a 512-point
# FFT, 80 mel bands from 50 Hz to 4 kHz (the Nyquist frequency). Frame f is centred on samples
# f * HOP + HOP / 2, so samples f * HOP ... (f + 1) * HOP - 1 belong to it: a clip of n samples
# has ceil(n / HOP) frames.
HOP, WINDOW, FFT, MEL_BINS = 128, 256, 512, 80
MEL_FMIN, MEL_FMAX = 50.0, 4000.0
LOG_FLOOR = -3.0  # log10 of the smallest magnitude kept (1e-3: below the int16 recordings' noise)
# (log10(magnitude) - MEL_CENTER) / MEL_SCALE: roughly -1 (silence) to 1.5 (loud vowels)
MEL_CENTER, MEL_SCALE = -1.0, 2.0
SILENT_FRAME = (LOG_FLOOR - MEL_CENTER) / MEL_SCALE  # every bin of a frame of digital silence


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


def mel_filterbank(sample_rate: int = 8000) -> np.ndarray:
    """[FFT // 2 + 1, MEL_BINS] triangular filters, evenly spaced on the HTK mel scale."""
    def mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    edges_mel = np.linspace(mel(MEL_FMIN), mel(min(MEL_FMAX, sample_rate / 2)), MEL_BINS + 2)
    edges = 700.0 * (10.0 ** (edges_mel / 2595.0) - 1.0)
    freqs = np.arange(FFT // 2 + 1) * sample_rate / FFT
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs[None, :] - lower) / (centre - lower)
    falling = (upper - freqs[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T


_FILTERS = {}


def _filters(sample_rate: int) -> np.ndarray:
    if sample_rate not in _FILTERS:
        _FILTERS[sample_rate] = mel_filterbank(sample_rate)
    return _FILTERS[sample_rate]


_INVERSE_FILTERS = {}


def _inverse_filters(sample_rate: int) -> np.ndarray:
    """The filterbank's pseudo-inverse [MEL_BINS, FFT // 2 + 1], computed once per rate."""
    if sample_rate not in _INVERSE_FILTERS:
        _INVERSE_FILTERS[sample_rate] = np.linalg.pinv(_filters(sample_rate))
    return _INVERSE_FILTERS[sample_rate]


def _window() -> np.ndarray:
    return np.hanning(WINDOW + 2)[1:-1]


def _frame_layout(samples: int) -> tuple:
    """(frames, padded length, left padding, [frames, WINDOW] indices into the padded clip)."""
    frames = -(-samples // HOP)
    left = (WINDOW - HOP) // 2
    index = np.arange(frames)[:, None] * HOP + np.arange(WINDOW)[None, :]
    return frames, frames * HOP + (WINDOW - HOP), left, index


def stft(audio: np.ndarray) -> np.ndarray:
    """Float audio [samples] -> complex spectra [ceil(samples / HOP), FFT // 2 + 1], framed as `log_mel`."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    frames, length, left, index = _frame_layout(len(audio))
    padded = np.zeros(length)
    padded[left : left + len(audio)] = audio
    return np.fft.rfft(padded[index] * _window(), FFT)


def istft(spectra: np.ndarray, samples: int) -> np.ndarray:
    """The least-squares inverse of `stft` (weighted overlap-add): float64 audio [samples]."""
    frames, length, left, index = _frame_layout(samples)
    window = _window()
    pieces = np.fft.irfft(spectra, FFT)[:, :WINDOW] * window
    out, norm = np.zeros(length), np.zeros(length)
    np.add.at(out, index, pieces)
    np.add.at(norm, index, np.broadcast_to(window**2, pieces.shape))
    return (out / np.maximum(norm, 1e-8))[left : left + samples]


def log_mel(audio: np.ndarray, sample_rate: int = 8000) -> np.ndarray:
    """Float audio [samples] in [-1, 1] -> normalised log-mel frames [ceil(samples / HOP), MEL_BINS].

    The clip is zero-padded by (WINDOW - HOP) / 2 on the left and as needed on the right, so
    frame f is centred on its own HOP samples. float32.
    """
    audio = np.asarray(audio, np.float64).reshape(-1)
    if len(audio) == 0:
        return np.zeros((0, MEL_BINS), np.float32)
    magnitude = np.abs(stft(audio)) @ _filters(sample_rate)
    log = np.log10(np.maximum(magnitude, 10.0**LOG_FLOOR))
    return ((log - MEL_CENTER) / MEL_SCALE).astype(np.float32)


def griffin_lim(frames: np.ndarray, iterations: int = 60, momentum: float = 0.99, seed: int = 0,
                sample_rate: int = 8000) -> np.ndarray:
    """Normalised log-mel frames [F, MEL_BINS] -> float32 audio [F * HOP] in [-1, 1], without a
    network: the mel magnitudes mapped back to FFT bins by the filterbank's pseudo-inverse, then
    a phase found by the fast Griffin-Lim algorithm (Perraudin et al., 2013: Griffin and Lim's
    alternating projections with `momentum`) from a random start drawn with `seed`. A reference
    vocoder: it shows what the frames alone carry, apart from what the WaveNet makes of them."""
    frames = np.asarray(frames, np.float64)
    magnitude = np.maximum((10.0 ** (frames * MEL_SCALE + MEL_CENTER)) @ _inverse_filters(sample_rate), 0.0)
    samples = len(frames) * HOP
    rng = np.random.default_rng(seed)
    target = magnitude * np.exp(2j * np.pi * rng.random(magnitude.shape))
    previous = np.zeros_like(target)
    for _ in range(iterations):
        projected = stft(istft(target, samples))
        accelerated = projected + momentum * (projected - previous)
        previous = projected
        target = magnitude * np.exp(1j * np.angle(accelerated))
    return np.clip(istft(target, samples), -1.0, 1.0).astype(np.float32)


def griffin_lim_clips(frames: np.ndarray, lengths, seed: int = 0) -> list:
    """Padded frames [B, F, MEL_BINS] with lengths [B] -> one `griffin_lim` clip each, clip i from
    seed + i: what `generate_clips` makes with vocoder "griffin-lim"."""
    return [griffin_lim(frames[i, : lengths[i]], seed=seed + i) for i in range(len(lengths))]


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


# --- Sampling -------------------------------------------------------------------------------


def gumbel_sampler(rng, batch, temperature, top_k=0, classes=MU + 1, chunk=4096):
    """next(sampler)(logits [batch, classes]) -> ids: softmax sampling at `temperature` by the
    Gumbel-max trick, argmax(logits / T + g) = argmax(logits + T g), with the noise drawn in chunks
    (a few microseconds a step instead of a cumulative sum). Temperature 0 or a top_k: `sample_logits`."""
    if temperature <= 0 or top_k:
        while True:
            yield lambda logits: sample_logits(logits, temperature, top_k, rng)
    while True:
        noise = rng.gumbel(size=(chunk, batch, classes)).astype(np.float32) * np.float32(temperature)
        for row in noise:
            yield lambda logits, row=row: np.argmax(logits + row, axis=-1)


def sample_mixture(mixture_logits, means, log_scales, temperature, rng) -> np.ndarray:
    """One frame per row from a mixture of diagonal Gaussians [B, K], [B, K, M], [B, K, M].

    The component is drawn from the mixture weights; the frame is its mean plus its scale times
    `temperature` times standard normal noise. Temperature 0: the likeliest component's mean.
    """
    rows = np.arange(len(mixture_logits))
    if temperature <= 0:
        return means[rows, np.argmax(mixture_logits, axis=-1)].astype(np.float32)
    k = np.argmax(mixture_logits + rng.gumbel(size=mixture_logits.shape), axis=-1)
    noise = rng.standard_normal(means.shape[::2]) * temperature
    return (means[rows, k] + np.exp(log_scales[rows, k]) * noise).astype(np.float32)


def sample_frames(prior_step, digits, max_frames: int, state_size: int, temperature: float, rng,
                  min_frames: int = 1):
    """Run the prior until every clip has ended: (frames [B, F, MEL_BINS] padded with silent
    frames, lengths [B]).

    prior_step(frame [B, M], digit [B], state [B, H]) -> (mixture_logits, means, log_scales,
    stop_logit [B], next_state). A clip ends at the first frame whose stop logit is positive
    (probability above one half), and at `max_frames` at the latest.
    """
    batch = len(digits)
    frame = np.full((batch, MEL_BINS), SILENT_FRAME, np.float32)  # the "go" frame: silence
    state = np.zeros((batch, state_size), np.float32)
    frames = np.full((batch, max_frames, MEL_BINS), SILENT_FRAME, np.float32)
    lengths = np.full(batch, max_frames, np.int64)
    running = np.ones(batch, bool)
    for t in range(max_frames):
        mixture_logits, means, log_scales, stop_logit, state = prior_step(frame, digits, state)
        ended = running & (np.asarray(stop_logit).reshape(-1) > 0) & (t >= min_frames)
        lengths[ended] = t
        running &= ~ended
        if not running.any():
            break
        frame = sample_mixture(np.asarray(mixture_logits), np.asarray(means), np.asarray(log_scales),
                               temperature, rng)
        frames[running, t] = frame[running]
    return frames[:, : int(lengths.max())], lengths


def vocode(step, condition, samples: int, temperature: float, rng) -> np.ndarray:
    """Codes [B, samples] from the vocoder's `step(current codes [B], conditioning row [B, D]) ->
    logits [B, 256]`, with `condition` [B, frames, D] the per-frame conditioning (row t // HOP at
    sample t). Starts from silence, as in training."""
    batch = condition.shape[0]
    samplers = gumbel_sampler(rng, batch, temperature)
    codes = np.empty((batch, samples), np.int32)
    current = np.full(batch, SILENCE, np.int32)
    with Progress(samples, f"vocoder samples ({batch} clip{'s' if batch > 1 else ''})") as progress:
        for t in range(samples):
            if t % HOP == 0:
                row = condition[:, t // HOP]  # the same array for the frame's HOP samples
            current = next(samplers)(step(current, row))
            codes[:, t] = current
            if t % HOP == HOP - 1:
                progress.update(HOP)
    return codes


VOCODERS = ("wavenet", "griffin-lim")


def generate_clips(prior_step, condition_fn, vocoder_step, digits, max_frames: int, state_size: int,
                   temperature: float, mel_temperature: float, seed: int = 0, vocoder: str = "wavenet"):
    """The two stages: (list of float clips in [-1, 1], frames [B, F, M], lengths [B] in frames).

    Each clip is cut at its own end; one random generator drives both stages, frames first.
    vocoder "griffin-lim": the frames become audio by `griffin_lim` instead of the WaveNet
    (condition_fn and vocoder_step are not called; `temperature` does not apply).
    """
    rng = np.random.default_rng(seed)
    frames, lengths = sample_frames(prior_step, digits, max_frames, state_size, mel_temperature, rng)
    if vocoder == "griffin-lim":
        return griffin_lim_clips(frames, lengths, seed), frames, lengths
    codes = vocode(vocoder_step, np.asarray(condition_fn(frames, digits)), frames.shape[1] * HOP, temperature, rng)
    audio = mu_law_decode(codes)
    return [audio[i, : lengths[i] * HOP] for i in range(len(digits))], frames, lengths


# --- ONNX Runtime -----------------------------------------------------------------------------


class StepRunner:
    """Runs the vocoder's `step` graph with its queues kept in ONNX Runtime buffers between calls."""

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
        # `sample` and `condition` and reading `logits` needs no call into ONNX Runtime.
        self._sample = np.zeros(batch, np.int32)
        self._condition = np.zeros((batch, info["condition_channels"]), np.float32)
        self._logits = np.zeros((batch, MU + 1), np.float32)
        self._arrays = (self._sample, self._condition, self._logits)
        self._row = None
        self._on_cpu = device == "cpu"
        if self._on_cpu:
            values = [ort.OrtValue.ortvalue_from_numpy(a) for a in self._arrays]
        else:  # on a GPU, ONNX Runtime copies through its own buffers
            values = [ort.OrtValue.ortvalue_from_numpy(a, device, 0) for a in self._arrays]
        self._values = values
        self.bindings = []
        for source, target in ((buffers[0], buffers[1]), (buffers[1], buffers[0])):
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("sample", values[0])
            binding.bind_ortvalue_input("condition", values[1])
            binding.bind_ortvalue_output("logits", values[2])
            for name, queue, next_queue in zip(self.queue_names, source, target):
                binding.bind_ortvalue_input(name, queue)
                binding.bind_ortvalue_output("next_" + name, next_queue)
            self.bindings.append(binding)
        self.steps = 0

    def __call__(self, sample: np.ndarray, condition: np.ndarray) -> np.ndarray:
        """Logits [B, 256] for the next sample, given this one and its conditioning row; advances
        the queues. The row is copied in only when it is another array than the last call's: pass a
        new array for a new frame (as `vocode` does), not the same one changed in place. The returned
        array is overwritten by the next call: copy it to keep it."""
        self._sample[:] = sample
        if condition is not self._row:  # a new frame's row (`vocode` passes one array per frame)
            self._condition[:] = condition
            self._row = condition
        if not self._on_cpu:
            self._values[0].update_inplace(self._sample)
            self._values[1].update_inplace(self._condition)
        self.session.run_with_iobinding(self.bindings[self.steps % 2])
        self.steps += 1
        return self._logits if self._on_cpu else self._values[2].numpy()


def _onnx_stages(export: Export, batch: int, vocoder: bool = True):
    """(prior_step, condition_fn, vocoder_step) callables on the export's three graphs (vocoder
    False: vocoder_step is None, for Griffin-Lim)."""
    info = export.runtime
    prior = export.session(info["prior_graph"], threads=1)
    prior_outputs = ["mixture_logits", "means", "log_scales", "stop_logit", "next_state"]

    def prior_step(frame, digit, state):
        return prior.run(prior_outputs, {"frame": frame, "digit": digit, "state": state})

    def condition_fn(frames, digits):
        return export.run(info["condition_graph"], {"mel": np.ascontiguousarray(frames, np.float32),
                                                    "digit": np.asarray(digits, np.int32)})["condition"]

    return prior_step, condition_fn, StepRunner(export, batch) if vocoder else None


def check_request(info: dict, digits, seconds: float, temperature: float, mel_temperature: float,
                  vocoder: str = "wavenet") -> tuple:
    """(digits array, max frames) for a request, or a one-line ValueError."""
    if vocoder not in VOCODERS:
        raise ValueError(f"vocoder must be one of {', '.join(VOCODERS)}, got {vocoder!r}")
    digits = parse_classes(digits, info["num_classes"], "digits")
    seconds = check_number("seconds", seconds)
    if seconds <= 0:
        raise ValueError(f"seconds must be a positive number (the longest clip), got {seconds}")
    max_frames = int(np.ceil(seconds * info["sample_rate"] / HOP))
    if max_frames > info["max_frames"]:
        raise ValueError(f"seconds must be at most {info['max_frames'] * HOP / info['sample_rate']:.3f} "
                         f"(the prior's {info['max_frames']} frames), got {seconds}")
    for name, value in (("temperature", temperature), ("mel_temperature", mel_temperature)):
        check_number(name, value, 0)
    return digits, max_frames


def check_calls(export: Export, batch: int, max_frames: int):
    """Refuses a request whose graphs' calls would take more than the export's `max_call_bytes`
    (the vocoder's step, the prior's, the conditioning of every frame), before anything is allocated."""
    info = export.runtime
    export.check_call(info["step_graph"], {"batch": batch})
    export.check_call(info["prior_graph"], {"batch": batch})
    export.check_call(info["condition_graph"], {"batch": batch, "frames": max_frames})


def generate(export: Export, digits="7", seconds: float = 1.0, temperature: float = 1.0,
             mel_temperature: float = None, seed: int = 0, vocoder: str = "wavenet") -> list:
    """One clip per requested digit, generated together: a list of float arrays in [-1, 1], each
    as long as the prior made it (at most `seconds`). `mel_temperature` None: the export's default.
    `vocoder`: "wavenet" (the model's) or "griffin-lim" (no network: `griffin_lim`)."""
    info = export.runtime
    if mel_temperature is None:
        mel_temperature = info["sample_defaults"]["mel_temperature"]
    if info.get("kind") != "audio-generator":
        raise ValueError(f"{export.path} holds a {info.get('kind')!r} model, not an audio generator")
    digits, max_frames = check_request(info, digits, seconds, temperature, mel_temperature, vocoder)
    check_calls(export, len(digits), max_frames)
    seed = check_count("seed", seed)
    prior_step, condition_fn, vocoder_step = _onnx_stages(export, len(digits), vocoder == "wavenet")
    clips, _, _ = generate_clips(prior_step, condition_fn, vocoder_step, digits, max_frames, info["prior_state"],
                                 temperature, mel_temperature, seed, vocoder)
    return clips


def resynthesize(export: Export, audio: np.ndarray, digit: int, temperature: float = 1.0, seed: int = 0):
    """The vocoder alone: a recording's own log-mel frames turned back into audio (floats)."""
    info = export.runtime
    digits = parse_classes([digit], info["num_classes"], "digit")
    temperature, seed = check_number("temperature", temperature, 0), check_count("seed", seed)
    audio = np.asarray(audio)
    if audio.ndim != 1 or not audio.size or not np.issubdtype(audio.dtype, np.floating) or not np.isfinite(audio).all():
        raise ValueError(f"audio must be a non-empty 1-D array of finite floats, got {audio.dtype} {list(audio.shape)}")
    check_calls(export, 1, len(audio) // HOP + 1)
    frames = log_mel(audio, info["sample_rate"])[None]
    _, condition_fn, vocoder_step = _onnx_stages(export, 1)
    codes = vocode(vocoder_step, condition_fn(frames, digits), len(audio), temperature, np.random.default_rng(seed))
    return mu_law_decode(codes[0])


def write_clips(export: Export, folder, digits="0,1,2,3,4,5,6,7,8,9", seconds: float = 1.0,
                temperature: float = 1.0, mel_temperature: float = None, seed: int = 0,
                vocoder: str = "wavenet") -> list:
    """Generate one clip per digit and write `digit_<d>.wav` files into `folder`: the paths."""
    digits = parse_classes(digits, export.runtime["num_classes"], "digits")
    clips = generate(export, digits, seconds, temperature, mel_temperature, seed=seed, vocoder=vocoder)
    return [write_wav(Path(folder) / f"digit_{d}.wav", clip, export.runtime["sample_rate"])
            for d, clip in zip(digits, clips)]
