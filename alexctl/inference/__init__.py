"""Inference on trained runs: one core (crops, softmax, averaging), evaluate, ensemble, classify, export."""
