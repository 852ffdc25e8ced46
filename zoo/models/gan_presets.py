"""`gan`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"       # or fashion_mnist (--set dataset=fashion_mnist)
    conditional: bool = True     # a label embedding in both networks: ask for a given digit
    latent_dim: int = 64
    base_filters: int = 64       # generator 7x7x(2*64) -> 14x14x64 -> 28x28x1
    label_dim: int = 16          # width of the label embedding
    dropout: float = 0.3         # the tutorial's discriminator dropout
    batch_size: int = 128
    epochs: int = 15
    steps_per_epoch: int = 0     # 0: one pass over the train split
    learning_rate: float = 2e-4  # Adam(2e-4, beta_1=0.5): the DCGAN paper's setting
    beta_1: float = 0.5
    seed: int = 0


PRESETS = {
    "default": Config(),
    "unconditional": Config(conditional=False),
    "tiny": Config(latent_dim=8, base_filters=4, label_dim=4, batch_size=8, epochs=2, steps_per_epoch=3),
}
