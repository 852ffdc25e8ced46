"""Several requests' calls of one graph as one call: what a replica's dynamic batcher runs.

Kept apart from zoo.serve.replicas (which needs Ray) so that it is tested where Ray is not installed.
"""

import numpy as np

MAX_BATCH_ROWS = 64  # rows one batched call holds at most, as the Triton repository's max_batch_size


def run_together(export, items: list) -> list:
    """Runs the calls `items` ([(graph, feed)], each feed checked alone) in as few calls of `export` as
    their graphs and trailing shapes allow, up to MAX_BATCH_ROWS rows a call (a larger feed runs alone):
    each item's results ({output: its rows}), in order."""
    rows = [len(next(iter(feed.values()))) for _, feed in items]
    groups = {}
    for i, (graph, feed) in enumerate(items):
        key = (graph, tuple(sorted((k, v.shape[1:], v.dtype.str) for k, v in feed.items())))
        groups.setdefault(key, []).append(i)
    results = [None] * len(items)
    for (graph, _), members in groups.items():
        for chunk in chunks(members, rows):
            feeds = [items[i][1] for i in chunk]
            out = export.run(graph, {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}, check=False)
            ends = np.cumsum([rows[i] for i in chunk])
            for i, end in zip(chunk, ends):
                results[i] = {k: v[end - rows[i] : end] for k, v in out.items()}
    return results


def chunks(members: list, rows: list) -> list:
    """`members` (indices into `rows`) in order, cut into runs of at most MAX_BATCH_ROWS rows."""
    runs, run, total = [], [], 0
    for i in members:
        if run and total + rows[i] > MAX_BATCH_ROWS:
            runs.append(run)
            run, total = [], 0
        run.append(i)
        total += rows[i]
    return runs + [run] if run else runs
