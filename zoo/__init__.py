"""zoo: a TensorFlow/Keras model zoo of generative models with SavedModel and ONNX exports.

Importing `zoo` imports neither TensorFlow nor Keras; `zoo.runtime` never does.
"""

__version__ = "0.1.0"
