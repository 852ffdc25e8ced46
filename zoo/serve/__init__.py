"""The inference server: the exports behind KServe's model server (`python -m zoo.serve`, make serve).

`zoo.serve.models` holds the KServe models (each graph, each export's sampling loop), and
`zoo.serve.completions` the OpenAI-compatible routes; both sit on `zoo.runtime` and never import
TensorFlow. This package imports nothing itself, so that `import zoo.serve` costs nothing where
kserve is not installed.
"""
