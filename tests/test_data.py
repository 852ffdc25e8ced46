"""Input pipelines: vocabulary, encoding, windows, and the missing-data error."""

import numpy as np
import pytest

from zoo import data
from zoo.config import UsageError


def test_vocabulary_is_sorted_distinct_and_encoding_round_trips():
    text = "To be, or not to be.\n"
    vocab = data.char_vocabulary(text)
    assert vocab == "".join(sorted(set(text)))
    ids = data.encode(text, vocab)
    assert ids.dtype == np.int32
    assert "".join(vocab[i] for i in ids) == text


def test_encoding_an_unknown_character_names_it():
    with pytest.raises(ValueError, match=r"\['z'\]"):
        data.encode("abz", "ab")


def test_random_windows_are_shifted_pairs_from_the_text():
    ids = np.arange(50, dtype=np.int32)
    ds = data.random_windows(ids, seq_len=8, batch_size=4, seed=1)
    for x, y in ds.take(3):
        x, y = x.numpy(), y.numpy()
        assert x.shape == y.shape == (4, 8)
        np.testing.assert_array_equal(y, x + 1)  # the next character, window by window
        np.testing.assert_array_equal(np.diff(x, axis=1), 1)  # contiguous slices of the text
        assert x.max() <= 48


def test_random_windows_need_enough_text():
    with pytest.raises(UsageError, match="shorter than seq_len"):
        data.random_windows(np.arange(5, dtype=np.int32), seq_len=8, batch_size=2, seed=0)


def test_consecutive_windows_tile_the_text_once():
    ids = np.arange(23, dtype=np.int32)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data.consecutive_windows(ids, 5, 3)])
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.testing.assert_array_equal(x.ravel(), np.arange(20))
    np.testing.assert_array_equal(y.ravel(), np.arange(1, 21))


def test_missing_dataset_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_online", lambda *a, **k: False)
    with pytest.raises(data.DataUnavailableError) as info:
        data.load_text("tiny_shakespeare", "train", data_dir=str(tmp_path))
    message = str(info.value)
    assert "'tiny_shakespeare'" in message and str(tmp_path) in message
    assert "no network connection" in message and "TFDS_DATA_DIR" in message


def test_downloads_can_be_disabled(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_NO_DOWNLOAD", "1")
    with pytest.raises(data.DataUnavailableError, match="downloads are disabled"):
        data.load("mnist", "test", data_dir=str(tmp_path))


def test_data_dir_option_wins_over_environment(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/from/env")
    assert data.data_dir_from("/from/option") == "/from/option"
    assert data.data_dir_from(None) == "/from/env"


def test_missing_data_through_the_cli_exits_1_with_one_line(tmp_path, monkeypatch, capsys):
    from zoo.cli import main

    monkeypatch.setattr(data, "_online", lambda *a, **k: False)
    code = main(["train", "rnn", "--preset", "tiny", "--data-dir", str(tmp_path / "empty"),
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0].startswith("error: dataset 'tiny_shakespeare' is not prepared in")


def test_real_tiny_shakespeare_pipeline(real_tfds):
    from zoo import registry
    from zoo.models import text

    d = text.load_data(registry.preset("rnn", "tiny"), real_tfds)
    assert len(d.vocabulary) == 65 and d.split_sizes == {"train": 1003854, "validation": 55770}
    x, y = next(iter(d.train))
    assert x.shape == (4, 12) and int(x.numpy().max()) < 65
