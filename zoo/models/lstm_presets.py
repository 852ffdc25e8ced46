"""`lstm`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "tiny_shakespeare"
    embedding_dim: int = 64      # as for rnn: 65 characters need few dimensions
    lstm_units: int = 320        # per layer; 1.3M parameters keep the three weight copies under 20 MB
    num_layers: int = 2          # a second layer helps more than a wider single one at equal time
    dropout: float = 0.1         # between layers; 1M characters overfit a 2M-parameter model late
    seq_len: int = 100
    batch_size: int = 64
    epochs: int = 16             # ~1.5 min an epoch on 2 CPU cores: ~25 minutes
    steps_per_epoch: int = 0     # 0: derived from the split size
    learning_rate: float = 2e-3
    clipnorm: float = 1.0
    seed: int = 0


PRESETS = {
    "default": Config(),
    "tiny": Config(embedding_dim=8, lstm_units=16, seq_len=12, batch_size=4, epochs=2, steps_per_epoch=3),
}
