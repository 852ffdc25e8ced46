"""`wavenet`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses

from zoo.runtime.audio import HOP


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "spoken_digit"
    test_speaker: str = "theo"     # held out whole: the test set is his 500 recordings
    val_from: int = 45             # recordings 45..49 of each train speaker and digit: validation
    # Vocoder. With the words in the frames, 128 ms of receptive field is plenty, and 10 layers of
    # 48 channels generate faster than real time on one core (`python -m zoo.bench --models wavenet`).
    residual_channels: int = 48    # the width every layer keeps: at 32 the vocoder loses words (docs/models/wavenet.md)
    skip_channels: int = 96        # the skip projection feeds the head (twice the width, as at 32)
    stacks: int = 1                # one stack of dilations 1, 2, ..., 512: 1,024 samples (128 ms)
    layers_per_stack: int = 10
    frame_channels: int = 256      # the frame network's width: 64 squeezes 3 x 80 mel values into too few features
    frame_layers: int = 3          # 3-frame convolutions: 7 frames (112 ms) of context, computed once a frame
    clip_length: int = 5120        # samples per training window (40 frames): the whole of 90% of clips
    vocoder_copies: int = 2        # speed- and gain-perturbed copies of each training clip for the vocoder:
                                   # new "voices" (5 speakers are few); an epoch stays one pass of the originals
    mel_noise: float = 0.1         # Gaussian noise on the vocoder's log-mel input in training: the prior's
                                   # frames are not exactly a recording's
    # Prior: a small causal transformer, chosen over a GRU and causal convolutions by measurement
    # (`scripts/wavenet_probes.py prior`; docs/models/wavenet.md).
    prior_units: int = 128         # the transformer's width (at most 64 frames: a small model is enough)
    prior_blocks: int = 3          # decoder blocks
    prior_heads: int = 4           # attention heads of 32 values each
    attention_dropout: float = 0.1 # on the attention weights in training
    prenet_units: int = 128        # Tacotron's pre-net on the previous frame, with dropout 0.5 in
    prior_dropout: float = 0.5     # training: the prior cannot lean on copying its last input
    mixtures: int = 4              # Gaussian components per frame
    max_frames: int = 64           # 1.02 s: 99.4% of the recordings are shorter
    prior_batch_size: int = 60     # sequences per step: fewer leave the prior's words unclear
    batch_size: int = 8            # vocoder windows per step
    epochs: int = 22               # fewer undertrain the vocoder; more lower its NLL but not its re-synthesis
    steps_per_epoch: int = 0       # 0: one pass over the train clips at batch_size
    learning_rate: float = 1e-3    # Adam, cosine-decayed to a tenth over the run
    sample_rate: int = 8000
    generate_per_digit: int = 20   # generated clips per digit judged by the digit classifier
    mel_temperature: float = 0.2   # the prior's noise scale when sampling (1: as trained); lower adds less
                                   # per-band noise to each frame (accuracy was the same at 0.6: see the card)
    resynthesis_clips: int = 0     # held-out clips re-synthesised from their mels (0: all 500)
    judge_epochs: int = 25         # the spoken-digit classifier's training (zoo.metrics.audio_classifier)
    seed: int = 0


PRESETS = {
    "default": Config(),
    "tiny": Config(residual_channels=4, skip_channels=8, stacks=1, layers_per_stack=3, frame_channels=4,
                   clip_length=256, prior_units=8, prior_blocks=1, prior_heads=2, prenet_units=8, mixtures=2, max_frames=4, prior_batch_size=4,
                   val_from=2, batch_size=4, epochs=2, steps_per_epoch=3, generate_per_digit=2,
                   resynthesis_clips=4, judge_epochs=1),
}


# Read only by evaluate(): overriding them keeps the run folder and the export folder.
EVAL_KEYS = ("generate_per_digit", "mel_temperature", "resynthesis_clips", "judge_epochs")


def check_config(cfg):
    from zoo.config import UsageError

    if cfg.clip_length % HOP:
        raise UsageError(f"clip_length={cfg.clip_length} is not a whole number of {HOP}-sample frames")
    if cfg.prior_units % cfg.prior_heads:
        raise UsageError(f"prior_units={cfg.prior_units} is not a multiple of prior_heads={cfg.prior_heads}")
    if cfg.sample_rate != 8000:
        raise UsageError(f"sample_rate={cfg.sample_rate}: spoken_digit and the log-mel frames are 8 kHz")
