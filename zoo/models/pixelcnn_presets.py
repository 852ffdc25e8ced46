"""`pixelcnn`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"       # or fashion_mnist
    conditional: bool = False    # the `conditional` preset sets it; the NLL is then -log p(x | label)
    filters: int = 32            # channels of each stack
    layers: int = 8              # gated layers after the first: rows above seen = 3 + 8 = 11
    first_kernel: int = 7        # the first, mask-A layer's kernel (van den Oord et al.)
    kernel: int = 3
    head: int = 64               # the 1 x 1 output head's width
    batch_size: int = 64
    epochs: int = 4              # 4 x 500 steps of 64 = 2.3 passes over the 55,000 training images:
    steps_per_epoch: int = 500   # ~1.1 s a step on 2 CPU cores, so the run fits the 45-minute budget
    learning_rate: float = 1e-3
    seed: int = 0


PRESETS = {
    "default": Config(),
    "conditional": Config(conditional=True),
    "tiny": Config(filters=4, layers=2, first_kernel=3, head=4, batch_size=8, epochs=2, steps_per_epoch=3),
}
