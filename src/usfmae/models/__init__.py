"""Models: the MAE (one file), registry, classifier heads, baselines, checkpoint interop."""
