"""`wavenet`: spoken digits in two stages, a log-mel prior and a mel-conditioned WaveNet vocoder.

A WaveNet conditioned on the digit alone babbles speech-like sound, not words (20% of its clips
were heard as the asked-for digit). Here the words come from a prior over log-mel frames, and the
WaveNet only turns frames into 8 kHz samples, as the WaveNet vocoders of Tacotron 2 do:
  1. prior: a digit-conditioned causal transformer over 16 ms log-mel frames (80 bands,
     zoo/runtime/audio.py), autoregressive, with a mixture of diagonal Gaussians over the next
     frame and a stop logit that ends the word. Sampled with noise, so ten clips of one digit differ.
  2. vocoder: embedding of the current 8-bit mu-law code, a stack of causal dilated `Conv1D`
     layers with gated tanh/sigmoid units, residual and skip connections, a 256-way softmax over
     the next code (van den Oord et al., 2016). The frames (three stacked 3-frame convolutions,
     plus the digit) are projected once per frame to every layer's gate bias and repeated over
     the frame's 128 samples: local conditioning.
One Keras model holds both; each training step updates both stages on their own losses (their
weights are disjoint, and Adam scales each weight's step by its own gradients).

Ways to run the weights:
  call(samples, mel, digit)    vocoder over a whole sequence: training, teacher-forced scoring
  condition(mel, digit)        every layer's conditioning, once per frame
  step(sample, row, queues)    one new sample from its frame's conditioning row and each layer's
                               queue of its last `dilation` inputs ("fast WaveNet", Paine et al.)
  prior_params(frames, digit)  the prior over a whole frame sequence (teacher forcing)
  prior_step(frame, digit, s)  one frame of the prior, its key/value cache in the state s
Data: TFDS `spoken_digit` has one split; every recording of `test_speaker` is the test set.

The package reads top to bottom as the model does: `network` (the layers and the Keras model),
`data` (the pipelines), `evaluation` (generation on the Keras model, and the scores), `export` (the
ONNX graphs and the card); this module names the contract's hooks (zoo.registry.HOOKS) from them.
"""

# the contract's hooks (zoo.registry.HOOKS) and what tests and notebooks use, from where they live
from zoo.models.wavenet_presets import Config, PRESETS, EVAL_KEYS, check_config  # noqa: F401
from zoo.models.wavenet.network import (  # noqa: F401
    DATASET, NUM_CLASSES, SAMPLE_DEFAULTS, LOG_SCALE_MIN, ResidualBlock, PriorBlock, MelPrior, mixture_nll, WaveNet,
    build_model,
)
from zoo.models.wavenet.data import (  # noqa: F401
    to_codes, vocoder_windows, prior_sequences, perturb, BUCKET, length_batches, split_clips, AudioData,
    prior_dataset, load_data,
)
from zoo.models.wavenet.evaluation import (  # noqa: F401
    keras_stages, generate, resynthesize, teacher_forced_nll, mel_distance, EVAL_NOTE, evaluate,
)
from zoo.models.wavenet.export import (  # noqa: F401
    export_graphs, runtime_info, card_sample, spectrogram_picture,
)
