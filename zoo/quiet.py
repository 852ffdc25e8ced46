"""Imports without TensorFlow's start-up lines, for notebooks (which show every line a library writes).

    from zoo.quiet import quiet_imports
    with quiet_imports():
        import keras
        from zoo.models import gan

TensorFlow's C++ side writes its start-up lines (oneDNN, CUDA drivers, absl's "All log messages
before absl::InitializeLog()") straight to file descriptor 2 while it is imported, whatever
TF_CPP_MIN_LOG_LEVEL says, and a Jupyter kernel shows that descriptor's output. Inside the block
descriptor 2 goes to /dev/null; after it, Python's and absl's loggers say only errors and Keras's
warnings about arguments a tf.data input ignores are dropped. Errors raised inside the block still
raise. This module imports nothing itself.
"""

import contextlib
import os
import sys
import warnings


@contextlib.contextmanager
def quiet_imports():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
        _quiet_loggers()


def _quiet_loggers():
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "absl.logging" in sys.modules:
        sys.modules["absl.logging"].set_verbosity("error")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\.|$)")
