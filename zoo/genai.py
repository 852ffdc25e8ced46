"""ONNX Runtime GenAI files for a `text-cached` export (the transformer): `genai_config.json`,
`tokenizer.json` and `tokenizer_config.json`, so that

    import onnxruntime_genai as og
    model = og.Model("exports/transformer")
    tokenizer = og.Tokenizer(model)

runs the exported `decoder.onnx` as it is, with GenAI's own generation loop. Standard library only.

What GenAI 0.18 needs (each met the hard way, see issue 15):
- model type "decoder": the graph's separate `past_key_values.{i}.key/value` inputs and
  `present.{i}.key/value` outputs ("gpt2" expects combined past tensors);
- no unknown keys in genai_config.json (they are errors);
- `eos_token_id` and `pad_token_id` real ids below `vocab_size`, and not "\n" (generation would stop
  at the first newline, and prompts ending in one would be cut): the model has no end-of-text
  token, so `STOP_CHARACTER`, which the model almost never writes, stands in; GenAI also reads
  that id in a prompt as padding (it shifts the positions after it), so prompts must not hold it;
- `past_present_share_buffer` true: the graph's cache has a fixed capacity and each call writes
  its new keys and values at `position_ids` (zoo.models.transformer.transformer_decoder), so GenAI binds
  past and present to one buffer of `max_length` positions, as `zoo.runtime` does; the graph needs
  no attention mask (its GroupQueryAttention reads each sequence's length from the positions);
- a GPT-2-class byte-level BPE tokenizer with one vocabulary entry per character and no merges;
  byte-level remapping spells space "Ġ" and newline "Ċ" (a raw " " entry silently encodes to -1).
"""

import json
from pathlib import Path

# '$' appears once in tiny_shakespeare's 1,003,854 training characters and never in its
# validation and test splits: as an end-of-sequence id it ends a generation almost never.
STOP_CHARACTER = "$"
FILES = ("genai_config.json", "tokenizer.json", "tokenizer_config.json")


def byte_to_unicode() -> dict:
    """GPT-2's byte-level remapping: each byte to a printable character (bytes that are already
    printable and not space map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def stop_id(vocabulary: str) -> int:
    """The id GenAI ends and pads with: STOP_CHARACTER's, or the vocabulary's last character's."""
    return vocabulary.index(STOP_CHARACTER) if STOP_CHARACTER in vocabulary else len(vocabulary) - 1


def tokenizer_json(vocabulary: str) -> dict:
    """A Hugging Face `tokenizers` BPE: one token per character, no merges, byte-level (pre-)tokenizer."""
    remap = byte_to_unicode()
    for c in vocabulary:
        if len(c.encode("utf-8")) != 1:
            raise ValueError(f"GenAI's byte-level tokenizer needs one-byte characters; {c!r} is not")
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": byte_level, "post_processor": None, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {remap[ord(c)]: i for i, c in enumerate(vocabulary)}, "merges": []},
    }


def tokenizer_config(vocabulary: str, max_context: int) -> dict:
    stop = vocabulary[stop_id(vocabulary)]
    return {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "add_bos_token": False,
            "bos_token": stop, "eos_token": stop, "unk_token": stop, "model_max_length": max_context,
            "clean_up_tokenization_spaces": False}


def genai_config(info: dict, decoder_file: str, hidden_size: int) -> dict:
    """genai_config.json for the export's runtime info (a `text-cached` manifest's `runtime`)."""
    vocabulary, stop = info["vocabulary"], stop_id(info["vocabulary"])
    past, present = info["past"], info["present"]
    return {
        "model": {
            "bos_token_id": stop, "context_length": info["max_context"], "eos_token_id": stop,
            "pad_token_id": stop, "type": "decoder", "vocab_size": len(vocabulary),
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": decoder_file, "head_size": info["head_dim"], "hidden_size": hidden_size,
                "num_attention_heads": info["num_heads"], "num_hidden_layers": info["num_layers"],
                "num_key_value_heads": info["num_heads"],
                "inputs": {"input_ids": "input_ids", "position_ids": "position_ids",
                           "past_key_names": past.format(i="%d", kind="key"),
                           "past_value_names": past.format(i="%d", kind="value")},
                "outputs": {"logits": "logits", "present_key_names": present.format(i="%d", kind="key"),
                            "present_value_names": present.format(i="%d", kind="value")},
            },
        },
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": info["max_context"], "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }


def write(folder, info: dict, hidden_size: int) -> list:
    """Write the three files into `folder` (an export): their paths."""
    folder = Path(folder)
    contents = {
        "genai_config.json": genai_config(info, f"{info['graph']}.onnx", hidden_size),
        "tokenizer.json": tokenizer_json(info["vocabulary"]),
        "tokenizer_config.json": tokenizer_config(info["vocabulary"], info["max_context"]),
    }
    paths = []
    for name, content in contents.items():
        (folder / name).write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(folder / name)
    return paths


def card_section(manifest: dict) -> str:
    """The model card's lines on running the folder with ONNX Runtime GenAI."""
    info = manifest["runtime"]
    stop = info["vocabulary"][stop_id(info["vocabulary"])]
    return "\n".join([
        "## ONNX Runtime GenAI", "",
        "This folder is also an [ONNX Runtime GenAI](https://github.com/microsoft/onnxruntime-genai) model "
        "(`genai_config.json`, `tokenizer.json`, `tokenizer_config.json` beside the decoder): "
        "`pip install onnxruntime-genai`, then", "",
        "```python",
        "import onnxruntime_genai as og",
        "",
        f"model = og.Model(\"exports/{manifest['model']}\")",
        "tokenizer = og.Tokenizer(model)",
        "params = og.GeneratorParams(model)",
        "params.set_search_options(max_length=200, do_sample=True, temperature=0.8)  # or do_sample=False: greedy",
        "generator = og.Generator(model, params)",
        "ids = tokenizer.encode(\"ROMEO:\")",
        "assert (ids >= 0).all(), \"a character outside the vocabulary encodes to -1\"",
        "generator.append_tokens(ids)",
        "while not generator.is_done():",
        "    generator.generate_next_token()",
        "print(tokenizer.decode(generator.get_sequence(0)))",
        "```", "",
        f"Greedy text equals `zoo.runtime`'s (tests/test_genai.py). `max_length` counts the prompt and is at most "
        f"`context_length` ({info['max_context']}): GenAI does not slide the context as `zoo.runtime` does. "
        "`genai_config.json` sets `past_present_share_buffer`: GenAI holds each cache tensor in one buffer of "
        "`max_length` positions, which the decoder writes in place, and the attention reads the whole buffer every "
        "step, so a `max_length` no larger than needed makes each step cheaper. "
        f"The model has no end-of-text token; GenAI ends and pads with the id of {stop!r}, so a prompt must not "
        f"contain {stop!r} (GenAI reads it as padding and shifts the positions after it). Prompts of different "
        "lengths cannot share a batch (the graph has no attention mask): run them one by one. "
        "The tokenizer encodes a character outside the vocabulary as -1, which the decoder must not be given "
        "(ONNX's Gather would read it as the last row): check the ids, as above (`zoo.runtime` refuses such prompts).",
    ])

