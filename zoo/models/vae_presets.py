"""`vae`'s hyper-parameters and presets, apart from the model code: they load without TensorFlow
(zoo.registry.presets_module), so the command line checks a preset and its --set values before
TensorFlow starts."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"       # or fashion_mnist
    conditional: bool = False    # the `conditional` preset sets it
    latent_dim: int = 32
    filters: int = 32            # encoder 32 -> 64 channels, decoder 64 -> 32
    hidden: int = 192            # the dense layers between the convolutions and the latent: they hold
                                 # most weights (256 made a 20.7 MB export, over the zoo's 20 MB)
    label_dim: int = 16
    batch_size: int = 128
    epochs: int = 50             # ~27 s an epoch here: 23 min; at 30 epochs validation still fell 0.1 an epoch
    steps_per_epoch: int = 0
    learning_rate: float = 1e-3
    seed: int = 0
    # k=1000 importance samples cost 1,000 decoder passes per image: ~0.28 s an image on 2 CPU
    # cores, so 47 min for the whole test split. The default scores the first 1,000 test images
    # (SE ~0.8 nats); --set iwae_images=10000 scores them all.
    iwae_k: int = 1000
    iwae_images: int = 1000


PRESETS = {
    "default": Config(),
    "conditional": Config(conditional=True),
    "tiny": Config(latent_dim=4, filters=4, hidden=8, label_dim=2, batch_size=8, epochs=2, steps_per_epoch=3,
                   iwae_k=20, iwae_images=10),
}


# Read only by evaluate(): overriding them keeps the run folder and the export folder.
EVAL_KEYS = ("iwae_k", "iwae_images")
