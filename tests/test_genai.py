"""The transformer's export folder runs in ONNX Runtime GenAI as it is (zoo.genai)."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

og = pytest.importorskip("onnxruntime_genai")
SHIPPED = ROOT / "exports" / "transformer"


def genai_greedy(folder, prompt: str, max_length: int) -> str:
    model = og.Model(str(folder))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, do_sample=False)
    generator = og.Generator(model, params)
    ids = tokenizer.encode(prompt)
    assert (np.asarray(ids) >= 0).all()
    generator.append_tokens(ids)
    while not generator.is_done():
        generator.generate_next_token()
    return tokenizer.decode(generator.get_sequence(0))


def runtime_greedy(folder, prompt: str, max_length: int) -> str:
    """zoo.runtime's greedy text, cut where GenAI stops: before its end id (GenAI leaves that out)."""
    from zoo import genai
    from zoo.runtime import load, sample_text

    export = load(folder)
    text = sample_text(export, prompt, max_length - len(prompt), temperature=0.0, on_full="refuse")[0]
    stop = export.runtime["vocabulary"][genai.stop_id(export.runtime["vocabulary"])]
    end = text.find(stop, len(prompt))
    return text if end < 0 else text[:end]


def test_export_writes_the_genai_files_and_lists_them(trained):
    folder = trained("transformer")["export"]
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("genai_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert name in manifest["files"]
    config = json.loads((folder / "genai_config.json").read_text())["model"]
    vocabulary = manifest["runtime"]["vocabulary"]
    assert config["type"] == "decoder" and config["vocab_size"] == len(vocabulary)
    assert 0 <= config["eos_token_id"] < len(vocabulary) and vocabulary[config["eos_token_id"]] != "\n"


# Not the stop character ('j' here, '$' in the shipped model): GenAI reads its id in a prompt as padding.
@pytest.mark.parametrize("prompt", ["a", "abc d", " i", "hhhh"])
def test_genai_greedy_text_equals_the_runtime_on_the_tiny_export(trained, prompt):
    folder = trained("transformer")["export"]
    max_length = json.loads((folder / "genai_config.json").read_text())["model"]["context_length"]
    assert genai_greedy(folder, prompt, max_length) == runtime_greedy(folder, prompt, max_length)


@pytest.mark.skipif(not (SHIPPED / "genai_config.json").exists(), reason="exports/transformer has no GenAI files")
@pytest.mark.parametrize("prompt", ["ROMEO:", "First Citizen:\n", "\n", "KING RICHARD III:\nWhat, my lord? "])
def test_genai_greedy_text_equals_the_runtime_on_the_shipped_export(prompt):
    got = genai_greedy(SHIPPED, prompt, 200)
    assert got == runtime_greedy(SHIPPED, prompt, 200)
    assert len(got) == 200  # '$' never came: the whole length was generated


@pytest.mark.skipif(not (SHIPPED / "genai_config.json").exists(), reason="exports/transformer has no GenAI files")
def test_tokenizer_round_trips_the_vocabulary_and_the_test_split(real_tfds):
    from zoo import data
    from zoo.runtime import load
    from zoo.runtime.text import encode

    vocabulary = load(SHIPPED).runtime["vocabulary"]
    tokenizer = og.Tokenizer(og.Model(str(SHIPPED)))
    for i, c in enumerate(vocabulary):
        assert list(tokenizer.encode(c)) == [i], repr(c)
        assert tokenizer.decode(np.array([i], np.int32)) == c
    text = data.load_text("tiny_shakespeare", "test", real_tfds)
    ids = np.asarray(tokenizer.encode(text))
    np.testing.assert_array_equal(ids, encode(text, vocabulary))
    assert tokenizer.decode(ids) == text
