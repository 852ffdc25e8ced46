"""The documentation's generated parts: the table of models, read from the shipped manifests, the
table of fine-tuning runs, read from the notebooks' records, and the serving page's load table, read
from `make bench-serve`'s record.

    python -m zoo.docs     # rewrites the <!-- models --> blocks of README.md and docs/models/index.md,
                           # the <!-- notebooks --> block of notebooks/README.md
                           # and the <!-- serve --> block of docs/serving.md

`tests/test_docs.py` fails when a block differs from what the manifests or records say, so a
re-trained model's figures reach the pages by running this once. Needs only the standard library.
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


def rewrite_block(path: Path, name: str, table: str) -> bool:
    """Put `table` between the `<!-- name -->` and `<!-- /name -->` lines of `path`; True when it changed."""
    text = Path(path).read_text()
    block = f"<!-- {name} -->\n{table}\n<!-- /{name} -->"
    new, count = re.subn(rf"<!-- {name} -->\n.*?<!-- /{name} -->", lambda _: block, text, flags=re.S)
    if count != 1:
        raise ValueError(f"{path}: expected one <!-- {name} --> ... <!-- /{name} --> block, found {count}")
    if new != text:
        Path(path).write_text(new)
    return new != text


def update(path: Path, exports=ROOT / "exports") -> bool:
    """Rewrite the `<!-- models -->` block of `path` (README.md or docs/models/index.md)."""
    pages, cards = PAGES[Path(path)]
    return rewrite_block(path, "models", models_table(pages, cards, exports))


NOTEBOOKS = ROOT / "notebooks"
# Each notebook's figures: (key in its record's before / after / baseline, name, format); None: the
# figure itself (a number), an int: that item of a list.
FIGURES = {
    "text": [(None, "held-out nats/char", "{:.3f}")],
    "gan": [("fid", "FID", "{:.1f}"), ("class_accuracy", "class accuracy", "{:.1%}")],
    "vae": [("test_negative_elbo", "negative ELBO", "{:.2f}"), ("test_nll_iwae", "IWAE NLL", "{:.2f}"),
            ("fid", "FID", "{:.1f}")],
    "pixelcnn": [(None, "exact NLL, nats", "{:.2f}")],
    "wavenet": [(0, "bits/sample", "{:.3f}"), (1, "prior loss", "{:.3f}"), (2, "re-synthesis heard right", "{:.1%}")],
    "diffusion": [("fid", "FID", "{:.1f}"), ("class_accuracy", "class accuracy", "{:.1%}")],
}


def last_runs(records=NOTEBOOKS / "records.jsonl") -> dict:
    """{notebook: its last recorded run}."""
    runs = {}
    for line in Path(records).read_text().splitlines() if Path(records).exists() else []:
        record = json.loads(line)
        runs[record["notebook"]] = record
    return runs


def notebooks_table(records=NOTEBOOKS / "records.jsonl") -> str:
    """The markdown table of each notebook's last recorded run: its parameters, wall time and figures."""
    lines = ["| notebook | parameters (its defaults) | wall time (2 CPU cores) | figure | before | after | from scratch, same budget |",
             "|---|---|---:|---|---:|---:|---:|"]
    for name, run in last_runs(records).items():
        params = ", ".join(f"`{k}={v!r}`" if isinstance(v, str) else f"`{k}={v}`" for k, v in run["params"].items())
        for i, (key, label, fmt) in enumerate(FIGURES[name]):
            def figure(which):
                value = run.get(which)
                if value is None:
                    return "not in this notebook"
                if isinstance(key, int) and key >= len(value):
                    return "not measured"
                return fmt.format(value if key is None else value[key])
            first = (f"[`{name}.ipynb`]({name}.ipynb)", params, f"{run['wall_seconds'] / 60:.1f} min") if i == 0 \
                else ("", "", "")
            lines.append("| " + " | ".join([*first, label, figure("before"), figure("after"), figure("baseline")]) + " |")
    return "\n".join(lines)


def references_table(records=NOTEBOOKS / "records.jsonl", references=NOTEBOOKS / "references.jsonl") -> str:
    """The markdown table of the full runs on the notebooks' new data (scripts/reference_runs.py's
    records, the last of each notebook) against each notebook's last fine-tuned figures: how far the
    notebook's budget gets towards the whole `make train` run (lower is better for every figure)."""
    lines = ["| notebook | full run (2 CPU cores) | figure | full run | fine-tuned | fine-tuned / full run |",
             "|---|---|---|---:|---:|---:|"]
    runs = last_runs(records)
    for name, reference in last_runs(references).items():
        figures = reference["reference"]
        for i, (key, label, fmt) in enumerate(FIGURES[name]):
            full = figures if key is None else figures[key]
            after = runs.get(name, {}).get("after")
            tuned = None if after is None else (after if key is None else after[key])
            first = (f"[`{name}.ipynb`]({name}.ipynb)", f"`{reference['command']}`, {reference['epochs_completed']} "
                     f"epochs, {reference['train_seconds'] / 60:.0f} min") if i == 0 else ("", "")
            lines.append("| " + " | ".join([*first, label, fmt.format(full),
                                            "not run" if tuned is None else fmt.format(tuned),
                                            "" if tuned is None else f"{tuned / full:.3f}"]) + " |")
    return "\n".join(lines)


def update_notebooks(path=NOTEBOOKS / "README.md", records=NOTEBOOKS / "records.jsonl",
                     references=NOTEBOOKS / "references.jsonl") -> bool:
    """Rewrite the `<!-- notebooks -->` and `<!-- references -->` blocks of the notebooks' README
    from their records."""
    changed = rewrite_block(path, "notebooks", notebooks_table(records))
    return rewrite_block(path, "references", references_table(records, references)) or changed


SERVE_RECORD = ROOT / "benchmarks" / "serve.md"


def serve_table(record=SERVE_RECORD) -> str:
    """The load table of `make bench-serve`'s record (benchmarks/serve.md): its lines from the header
    row through the last row."""
    lines = Path(record).read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("| target |")), None)
    if start is None:
        raise ValueError(f"{record}: no table whose header starts with '| target |'")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def update_serving(path=ROOT / "docs" / "serving.md", record=SERVE_RECORD) -> bool:
    """Rewrite the `<!-- serve -->` block of the serving page from the load record."""
    return rewrite_block(path, "serve", serve_table(record))


def main(argv=None):
    for path in PAGES:
        print(f"{path.relative_to(ROOT)}: {'rewritten' if update(path) else 'already matches'} the manifests")
    changed = update_notebooks()
    print(f"notebooks/README.md: {'rewritten' if changed else 'already matches'} the records")
    changed = update_serving()
    print(f"docs/serving.md: {'rewritten' if changed else 'already matches'} benchmarks/serve.md")


if __name__ == "__main__":
    sys.exit(main())
