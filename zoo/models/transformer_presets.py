"""`transformer`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "tiny_shakespeare"
    num_layers: int = 4          # 4 blocks of width 128: 0.85M parameters, about what ~20M characters
    d_model: int = 128           # (30 min here) can train well; wider ends worse in that time
    num_heads: int = 4           # head size 32
    mlp_ratio: int = 4           # the GPT-2 MLP width
    dropout: float = 0.0         # in an hour's training, dropout costs more than it saves
    max_context: int = 320       # positions learned; 64 prompt + 256 generated fit without sliding
    seq_len: int = 320           # training windows use the whole context
    batch_size: int = 16         # many small steps beat few big ones on a short budget
    epochs: int = 22             # one epoch = the train split's worth of characters (196 steps)
    steps_per_epoch: int = 0     # 0: derived from the split size
    learning_rate: float = 2e-3  # AdamW peak; fine for a model this small
    warmup_steps: int = 100      # linear warmup from 0, then cosine decay to a tenth
    weight_decay: float = 0.1
    clipnorm: float = 1.0
    seed: int = 0


PRESETS = {
    "default": Config(),
    "tiny": Config(num_layers=2, d_model=16, num_heads=2, max_context=16, seq_len=12, batch_size=4,
                   epochs=2, steps_per_epoch=3, warmup_steps=1),
}


def check_config(cfg):
    from zoo.config import UsageError

    if cfg.seq_len > cfg.max_context:
        raise UsageError(f"seq_len={cfg.seq_len} exceeds max_context={cfg.max_context}")
    if cfg.d_model % cfg.num_heads:
        raise UsageError(f"d_model={cfg.d_model} is not a multiple of num_heads={cfg.num_heads}")
