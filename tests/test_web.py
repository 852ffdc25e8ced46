"""The browser page (web/): the exports sampled by onnxruntime-web in headless Chromium equal zoo.runtime.

Needs Debian's chromium + chromium-driver, selenium (the test extra) and the page's npm packages
(`make web`); `.ci/run` installs them. The page is served from a temporary root whose exports are
the tiny test exports, through the page's test hook (window.zooTest) with fixed inputs.
"""

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.runtime import load
from zoo.runtime.text import sample_text

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from browser import CHROMEDRIVER, CHROMIUM, Page  # noqa: E402  (web/browser.py: selenium + web/serve.py)

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"


def _missing():
    if not (CHROMIUM and CHROMEDRIVER):
        return "Debian's chromium and chromium-driver are not installed (.ci/run installs them with apt)"
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        return "web/node_modules is missing: run `make web` (npm ci)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def served_root(tmp_path, exports: dict) -> Path:
    """A folder holding web/ (a link to the repository's) and exports/<model> (links to `exports`)."""
    root = tmp_path / "site"
    (root / "exports").mkdir(parents=True)
    (root / "web").symlink_to(WEB, target_is_directory=True)
    for name, folder in exports.items():
        (root / "exports" / name).symlink_to(folder, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def tiny(trained, tmp_path_factory):
    exports = {name: trained(name)["export"] for name in ("gan", "vae", "diffusion", "lstm", "transformer", "wavenet")}
    page = Page(served_root(tmp_path_factory.mktemp("web"), exports))
    page.open()
    yield page, exports
    page.close()


def test_gan_and_vae_images_equal_the_runtime(tiny):
    page, exports = tiny
    for name in ("gan", "vae"):
        export = load(exports[name])
        info = export.runtime
        labels = np.array([3, 7, 7], np.int32) if info["conditional"] else np.zeros(3, np.int32)
        z = np.random.default_rng(5).standard_normal((3, info["latent_dim"])).astype(np.float32)
        feed = {"z": z, "label": labels} if info["conditional"] else {"z": z}
        want = export.run(info["graph"], feed)[info["output"]]
        params = {"labels": "3,7,7", "perLabel": 1} if info["conditional"] else {"labels": 3, "perLabel": 1}
        got = page.call("images", model=name, seed=0, z=z.ravel().tolist(), **params)
        assert got["dims"] == list(want.shape)
        np.testing.assert_allclose(np.array(got["raw"]).reshape(want.shape), want, atol=1e-4, err_msg=name)
        assert got["checked"][info["graph"]] == "sha256 ok"


def test_greedy_text_equals_the_runtime(tiny):
    page, exports = tiny
    for name in ("lstm", "transformer"):
        export = load(exports[name])
        prompt = export.runtime["vocabulary"][5:9]
        # Longer than the tiny transformer's context: the page slides its cache as the runtime does.
        length = 3 * export.runtime.get("max_context", 20)
        want = sample_text(export, prompt, length, temperature=0.0)[0]
        got = page.call("text", model=name, prompt=prompt, length=length, temperature=0, topK=0, seed=0)
        assert got["text"] == want, name


def test_ddim_10_equals_the_runtime(tiny):
    from zoo.runtime import diffusion
    from zoo.runtime.images import denoiser

    page, exports = tiny
    export = load(exports["diffusion"])
    info = export.runtime
    labels = np.array([1, 4], np.int32)
    shape = (2, info["height"], info["width"], 1)
    want = np.clip(diffusion.ddim_sample(denoiser(export), diffusion.Schedule(**info["schedule"]), shape, labels,
                                         steps=10, guidance=2.0, null_label=info["null_label"], seed=3,
                                         clip=(-1.0, 1.0)), -1, 1)
    noise = np.random.default_rng(3).standard_normal(shape)  # ddim_sample's own first draw
    got = page.call("diffusion", labels="1,4", perLabel=1, steps=10, guidance=2.0, seed=0, noise=noise.ravel().tolist())
    np.testing.assert_allclose(np.array(got["raw"]).reshape(shape), want, atol=1e-3)


def test_speech_at_temperature_zero_equals_the_runtime(tiny):
    from zoo.runtime import audio

    page, exports = tiny
    export = load(exports["wavenet"])
    info = export.runtime
    digits = np.array([2, 5], np.int32)
    seconds = info["max_frames"] * audio.HOP / info["sample_rate"]
    prior_step, condition_fn, step = audio._onnx_stages(export, len(digits))
    want, _, _ = audio.generate_clips(prior_step, condition_fn, step, digits, info["max_frames"], info["prior_state"],
                                      temperature=0.0, mel_temperature=0.0)
    got = page.call("speech", digits="2,5", seconds=seconds, temperature=0, melTemperature=0, seed=0)
    assert [len(c) for c in got["clips"]] == [len(c) for c in want]
    for g, w in zip(got["clips"], want):
        np.testing.assert_allclose(g, w, atol=1e-6)


def test_the_page_samples_from_its_controls_without_console_errors(tiny, tmp_path):
    page, _ = tiny
    for button in ("gan-go", "vae-lerp", "diff-go", "text-go"):
        page.click_and_wait(button)
    for section in ("gan", "vae", "diff", "text"):
        assert not page.driver.find_element("id", f"{section}-error").is_displayed(), page.text(f"{section}-error")
    assert page.driver.execute_script("return document.getElementById('gan-canvas').width") > 0
    assert len(page.text("text-out")) > len(page.driver.find_element("id", "text-prompt").get_attribute("value"))
    page.driver.save_screenshot(str(os.environ.get("ZOO_WEB_SCREENSHOT", tmp_path / "page.png")))
    assert page.errors() == []


def test_a_missing_or_modified_export_is_a_clear_message(trained, tmp_path):
    gan = tmp_path / "gan"
    shutil.copytree(trained("gan")["export"], gan)
    onnx_file = gan / "generator.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 1
    onnx_file.write_bytes(bytes(data))
    page = Page(served_root(tmp_path, {"gan": gan}))  # and no vae, diffusion, text or wavenet at all
    try:
        page.open()
        assert "make train-vae" in page.text("vae-error") and "not found" in page.text("vae-error")
        page.click_and_wait("gan-go")
        assert "does not match its sha256" in page.text("gan-error")
        unexpected = [e for e in page.errors() if "404" not in e["message"]]
        assert unexpected == []
    finally:
        page.close()


def test_every_shipped_graph_opens_in_onnxruntime_web():
    """The committed exports/ (not the tiny ones): each graph's session starts in the browser."""
    shipped = {p.parent.name: p.parent for p in (ROOT / "exports").glob("*/manifest.json")}
    if not shipped:
        pytest.skip("no exports/ in this checkout")
    page = Page(ROOT)
    try:
        page.open()
        opened = page.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "zooTest.openAll(arguments[0]).then(done, (e) => done({error: e.message}));", sorted(shipped))
        assert "error" not in opened, opened
        for name, folder in shipped.items():
            graphs = json.loads((folder / "manifest.json").read_text())["graphs"]
            assert opened[name] == {g: "sha256 ok" for g in graphs}, name
        assert page.errors() == []
    finally:
        page.close()


def test_the_worker_refuses_bad_arguments_in_one_line_and_keeps_working(tiny):
    """What a page (or another program posting to the worker) could send: each a one-line error naming
    the argument, huge counts refused before anything is allocated; the worker answers the next call."""
    page, _ = tiny
    cases = [
        ("images", dict(model="gan", labels="1", perLabel=0, seed=0), r"^perLabel must be >= 1, got 0$"),
        ("images", dict(model="gan", labels="1", perLabel=2.5, seed=0), r"^perLabel must be a whole number, got 2.5$"),
        ("images", dict(model="gan", labels="1", perLabel=10**9, seed=0), r"^graph generator at batch 1000000000 needs"),
        ("images", dict(model="gan", labels="1", perLabel=1, seed=-1), r"^seed must be >= 0, got -1$"),
        ("images", dict(model="gan", labels="1,x", perLabel=1, seed=0), r"^labels must be integers in 0..9"),
        ("images", dict(model="vae", labels="many", perLabel=1, seed=0), r"^labels must be a whole number"),
        ("interpolate", dict(model="vae", seed=0, rows=10**6, steps=10**3), r"^graph decoder at batch 1000000000 needs"),
        ("diffusion", dict(labels="1", perLabel=1, steps=0, guidance=1, seed=0), r"^steps must be from 1 to \d+, got 0$"),
        ("diffusion", dict(labels="1", perLabel=1, steps=2, guidance="2", seed=0), r'^guidance must be a number, got "2"$'),
        ("diffusion", dict(labels="1", perLabel=10**8, steps=2, guidance=1, seed=0), r"^graph denoiser at batch 200000000"),
        ("text", dict(model="lstm", prompt=5, length=3, temperature=0, topK=0, seed=0), r"^the prompt must be a string, got 5$"),
        ("text", dict(model="lstm", prompt="a", length=-1, temperature=0, topK=0, seed=0), r"^length must be from 0 to"),
        ("text", dict(model="lstm", prompt="a", length=3, temperature=-1, topK=0, seed=0),
         r"^temperature must be a finite number >= 0, got -1$"),
        ("text", dict(model="transformer", prompt="a", length=3, temperature=0, topK=1.5, seed=0),
         r"^topK must be a whole number, got 1.5$"),
        ("speech", dict(digits="1", seconds="x", temperature=0, melTemperature=0, seed=0), r'^seconds must be a number, got "x"$'),
        ("speech", dict(digits="", seconds=0.01, temperature=0, melTemperature=0, seed=0), r"^digits must be integers"),
        ("speech", dict(digits="1", seconds=0.01, temperature=0, melTemperature=-2, seed=0),
         r"^melTemperature must be a finite number >= 0, got -2$"),
    ]
    import re

    for task, params, message in cases:
        result = page.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "zooTest.call(arguments[0], arguments[1]).then(() => done({}), (e) => done({error: e.message}));",
            task, params)
        assert re.search(message, result.get("error", "")), (task, params, result)
        assert "\n" not in result["error"]
    got = page.call("images", model="gan", labels="1", perLabel=1, seed=0)  # the worker is still there
    assert got["dims"][0] == 1
