"""`rnn`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "tiny_shakespeare"
    embedding_dim: int = 64      # 65 characters need few dimensions; the GRU does the work
    rnn_units: int = 640         # 1.4M parameters: three copies (.keras, SavedModel, ONNX) stay under 20 MB
    seq_len: int = 100           # characters of context per training window (the tutorial's value)
    batch_size: int = 64
    epochs: int = 16             # one epoch = the train split's worth of characters (~157 steps, ~1.5 min here)
    steps_per_epoch: int = 0     # 0: derived from the split size; tests set a few
    learning_rate: float = 2e-3  # Adam; decays by cosine to a tenth over the run
    clipnorm: float = 1.0        # recurrent nets occasionally spike; clip the gradient norm
    seed: int = 0


PRESETS = {
    "default": Config(),
    "tiny": Config(embedding_dim=8, rnn_units=16, seq_len=12, batch_size=4, epochs=2, steps_per_epoch=3),
}
