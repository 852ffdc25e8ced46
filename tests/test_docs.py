"""The documentation: a short README, the models table generated from the manifests, and the
MkDocs site built with --strict (a broken link or anchor, or a page left out of the navigation, fails)."""

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from zoo import docs, registry


def block(text):
    found = re.findall(r"<!-- models -->\n(.*?)\n<!-- /models -->", text, flags=re.S)
    assert len(found) == 1, "one <!-- models --> block"
    return found[0]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; the rest belongs in docs/"


@pytest.mark.parametrize("page", ["README.md", "docs/models/index.md"])
def test_models_table_is_the_manifests(page):
    """`python -m zoo.docs` wrote the table from exports/*/manifest.json: a figure edited by hand, or a
    re-trained model whose table was not re-written, fails."""
    assert docs.MODELS == list(registry.MODELS)
    pages, cards = docs.PAGES[ROOT / page]
    assert block((ROOT / page).read_text()) == docs.models_table(pages, cards)


def test_models_table_reads_the_manifest(tmp_path):
    """The table follows a manifest: another figure in a copy of the exports shows in the table."""
    import json
    import shutil

    for name in docs.MODELS:
        (tmp_path / name).mkdir()
        shutil.copy(ROOT / "exports" / name / "manifest.json", tmp_path / name / "manifest.json")
    manifest = json.loads((tmp_path / "gan" / "manifest.json").read_text())
    manifest["metrics"]["class_accuracy"] = 0.5
    (tmp_path / "gan" / "manifest.json").write_text(json.dumps(manifest))
    table = docs.models_table("docs/models/", "exports/", exports=tmp_path)
    assert "class accuracy 50.0%" in table and table != docs.models_table("docs/models/", "exports/")
    page = tmp_path / "page.md"
    page.write_text("no block here\n")
    with pytest.raises(ValueError, match="one <!-- models -->"):
        docs.PAGES[page] = ("", "")
        try:
            docs.update(page, exports=tmp_path)
        finally:
            del docs.PAGES[page]


def build(tmp_path, config=ROOT / "mkdocs.yml"):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_site_builds_strict(tmp_path):
    done = build(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "site"
    for page in ("index.html", "models/transformer/index.html", "benchmarks/index.html", "api/index.html",
                 "notebooks/gan/index.html", "exports/wavenet/index.html", "license/index.html"):
        assert (site / page).exists(), page
    api = (site / "api" / "index.html").read_text()
    assert "sample_text" in api and "export_finetuned" in api  # the reference is read from the docstrings
    card = (site / "models" / "gan" / "index.html").read_text()
    assert 'href="../../exports/gan/"' in card  # the repository link to the card, rewritten by docs/hooks.py
    assert not any(site.rglob("*.onnx")) and not any(site.rglob("*.keras"))  # the weights stay out


def test_site_refuses_a_page_left_out_of_the_nav(tmp_path):
    """The strict build is a check: a page that no nav entry names fails it, and so does a broken link.
    Built from a copy of docs/ beside copies of (or links to) the folders it links in, never the repository's."""
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs", symlinks=True)  # its relative symlinks lead to copy/...
    for name in ("benchmarks", "notebooks", "scripts"):  # small: copied, so that their links back into docs/ stay inside
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("logs"))
    for name in ("exports", "web"):  # large: linked
        (copy / name).symlink_to(ROOT / name)
    config = (ROOT / "mkdocs.yml").read_text().replace("paths: [.]", f"paths: [{ROOT}]")
    (copy / "mkdocs.yml").write_text(config)
    assert build(tmp_path, copy / "mkdocs.yml").returncode == 0  # the copy builds as the repository does

    (copy / "docs" / "orphan.md").write_text("# orphan\n")
    done = build(tmp_path, copy / "mkdocs.yml")
    assert done.returncode != 0 and "orphan.md" in done.stdout + done.stderr
    (copy / "docs" / "orphan.md").unlink()

    (copy / "docs" / "gpu.md").write_text((ROOT / "docs" / "gpu.md").read_text() + "\n[gone](no-such-page.md)\n")
    done = build(tmp_path, copy / "mkdocs.yml")
    assert done.returncode != 0 and "no-such-page.md" in done.stdout + done.stderr


def test_notebooks_table_is_the_records(tmp_path):
    """notebooks/README.md's table is what `python -m zoo.docs` writes from notebooks/records.jsonl,
    and the last run of a notebook is the one it shows."""
    text = (ROOT / "notebooks" / "README.md").read_text()
    [found] = re.findall(r"<!-- notebooks -->\n(.*?)\n<!-- /notebooks -->", text, flags=re.S)
    assert found == docs.notebooks_table()

    records = tmp_path / "records.jsonl"
    run = {"notebook": "gan", "params": {"STEPS": 3000, "BASELINE": True}, "wall_seconds": 1200.0,
           "before": {"fid": 275.5, "class_accuracy": 0.106}, "after": {"fid": 25.0, "class_accuracy": 0.85},
           "baseline": {"fid": 40.0, "class_accuracy": 0.8}}
    records.write_text(json.dumps(dict(run, wall_seconds=60.0)) + "\n" + json.dumps(run) + "\n")
    table = docs.notebooks_table(records)
    assert "| [`gan.ipynb`](gan.ipynb) | `STEPS=3000`, `BASELINE=True` | 20.0 min | FID | 275.5 | 25.0 | 40.0 |" in table
    assert "| class accuracy | 10.6% | 85.0% | 80.0% |" in table and "1.0 min" not in table


def test_references_table_sets_the_full_runs_beside_the_notebooks(tmp_path):
    """The `<!-- references -->` block is written from notebooks/references.jsonl; a full run's
    figures stand beside the notebook's last fine-tuned ones, with their ratio."""
    text = (ROOT / "notebooks" / "README.md").read_text()
    [found] = re.findall(r"<!-- references -->\n(.*?)\n<!-- /references -->", text, flags=re.S)
    assert found == docs.references_table()

    records, references = tmp_path / "records.jsonl", tmp_path / "references.jsonl"
    records.write_text(json.dumps({"notebook": "pixelcnn", "params": {}, "wall_seconds": 60.0, "before": 354.4,
                                   "after": 99.0}) + "\n")
    full = {"notebook": "pixelcnn", "command": "make train-pixelcnn", "epochs_completed": 4,
            "train_seconds": 2100.0, "reference": 90.0}
    references.write_text(json.dumps(dict(full, reference=95.0)) + "\n" + json.dumps(full) + "\n")
    table = docs.references_table(records, references)
    assert ("| [`pixelcnn.ipynb`](pixelcnn.ipynb) | `make train-pixelcnn`, 4 epochs, 35 min | exact NLL, nats | "
            "90.00 | 99.00 | 1.100 |") in table and "95.00" not in table
    records.write_text("")
    assert "| 90.00 | not run |  |" in docs.references_table(records, references)


def test_serving_table_is_the_load_record(tmp_path):
    """docs/serving.md's load table is the one `make bench-serve` wrote to benchmarks/serve.md, and a
    re-measured record reaches the page through `python -m zoo.docs`."""
    text = (ROOT / "docs" / "serving.md").read_text()
    [found] = re.findall(r"<!-- serve -->\n(.*?)\n<!-- /serve -->", text, flags=re.S)
    assert found == docs.serve_table() and found.count("\n") >= 13  # header, rule, 12 rows

    record, page = tmp_path / "serve.md", tmp_path / "serving.md"
    record.write_text("# load\n\n| target | clients | one process |\n|---|---|---|\n| gan | 1 | 9.0/s |\n\nAfter.\n")
    page.write_text("Before.\n\n<!-- serve -->\n| old |\n<!-- /serve -->\n\nAfter.\n")
    assert docs.update_serving(page, record) and not docs.update_serving(page, record)
    assert page.read_text() == ("Before.\n\n<!-- serve -->\n| target | clients | one process |\n|---|---|---|\n"
                                "| gan | 1 | 9.0/s |\n<!-- /serve -->\n\nAfter.\n")
