"""Pruning: the target layers (`layers`), the directed engine (`engine`), ratio specs (`spec`), what a pruned copy
costs (`costs`: GFLOPs, or milliseconds measured by `latency`), one-shot baselines (`baselines`), activations
shared between pruned copies (`memo`) and a pruned checkpoint put back in its full-width yaml (`inflate`)."""
