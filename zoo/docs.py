"""The documentation's generated part: the table of models, read from the shipped manifests.

    python -m zoo.docs     # rewrites the <!-- models --> block of README.md and docs/models/index.md

`tests/test_docs.py` fails when a block differs from what the manifests say, so a re-trained model's
figures reach both pages by running this once. Needs only the standard library.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["rnn", "lstm", "transformer", "gan", "vae", "pixelcnn", "wavenet", "diffusion"]  # zoo.registry's order
PAGES = {ROOT / "README.md": ("docs/models/", "exports/"), ROOT / "docs/models/index.md": ("", "../../exports/")}

WHAT = {
    "rnn": "GRU character model",
    "lstm": "2-layer LSTM character model",
    "transformer": "GPT-style decoder with a key/value cache",
    "gan": "class-conditional DCGAN",
    "vae": "convolutional VAE, Bernoulli pixels",
    "pixelcnn": "gated PixelCNN, exact likelihood",
    "wavenet": "digit-conditioned mel prior + WaveNet vocoder",
    "diffusion": "class-conditional DDPM, U-Net, DDIM sampler",
}

# The headline figures of each model: (metric key in the manifest, how to write it: the value is {0},
# the other metrics by name).
HEADLINE = {
    "rnn": [("test_nats_per_char", "{0:.3f} test nats/char")],
    "lstm": [("test_nats_per_char", "{0:.3f} test nats/char")],
    "transformer": [("test_nats_per_char", "{0:.3f} test nats/char")],
    "gan": [("fid", "FID {0:.1f} ({samples:,} samples)"), ("class_accuracy", "class accuracy {0:.1%}")],
    "vae": [("test_nll_iwae", "{0:.2f} nats (IWAE bound, first {iwae_images:,} images)"), ("test_negative_elbo", "negative ELBO {0:.2f}")],
    "pixelcnn": [("test_nll_nats", "{0:.2f} nats (exact NLL)")],
    "wavenet": [("test_nll_bits_per_sample", "{0:.2f} bits/sample"), ("generated_digit_accuracy", "digits heard right {0:.1%}")],
    "diffusion": [("ddim20_fid", "DDIM-20 FID {0:.1f} ({samples} samples)"), ("ddim20_class_accuracy", "class accuracy {0:.1%}")],
}


def models_table(pages: str, cards: str, exports=ROOT / "exports") -> str:
    """The markdown table, linking to the model pages under `pages` and the cards under `cards`."""
    lines = ["| model | what | data | parameters | training (2 CPU cores) | headline (test split) | card |",
             "|---|---|---|---:|---:|---|---|"]
    for name in MODELS:
        manifest = json.loads((Path(exports) / name / "manifest.json").read_text())
        metrics, training = manifest["metrics"], manifest["training"]
        figures = ", ".join(fmt.format(metrics[key], **metrics) for key, fmt in HEADLINE[name] if key in metrics)
        lines.append(f"| [`{name}`]({pages}{name}.md) | {WHAT[name]} | `{manifest['dataset']['name']}` | "
                     f"{training['params']:,} | {training['train_seconds'] / 60:.0f} min | {figures} | "
                     f"[exports/{name}]({cards}{name}/README.md) |")
    return "\n".join(lines)


def update(path: Path, exports=ROOT / "exports") -> bool:
    """Rewrite the `<!-- models -->` ... `<!-- /models -->` block of `path`; True when it changed."""
    pages, cards = PAGES[Path(path)]
    text = Path(path).read_text()
    block = f"<!-- models -->\n{models_table(pages, cards, exports)}\n<!-- /models -->"
    new, count = re.subn(r"<!-- models -->\n.*?<!-- /models -->", lambda _: block, text, flags=re.S)
    if count != 1:
        raise ValueError(f"{path}: expected one <!-- models --> ... <!-- /models --> block, found {count}")
    if new != text:
        Path(path).write_text(new)
    return new != text


def main(argv=None):
    for path in PAGES:
        print(f"{path.relative_to(ROOT)}: {'rewritten' if update(path) else 'already matches'} the manifests")


if __name__ == "__main__":
    sys.exit(main())
