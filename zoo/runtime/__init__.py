"""Load zoo exports and sample from them with numpy and onnxruntime only.

Nothing in this package imports TensorFlow or Keras (tests/test_runtime.py proves it), so a
program that samples from `exports/<model>/` needs only `pip install numpy onnxruntime`.

    from zoo.runtime import load, sample_text
    export = load("exports/rnn")              # verifies every file's sha256 from manifest.json
    print(sample_text(export, prompt="ROMEO:", length=200, seed=1)[0])
"""

from zoo.runtime.core import Export, ExportFileError, ExportFormatError, load, sample_logits
from zoo.runtime.text import sample_text

__all__ = ["Export", "ExportFileError", "ExportFormatError", "load", "sample_logits", "sample_text"]
