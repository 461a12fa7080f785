"""Toy models that isolate one phenomenon of SPEC section 8 without any language model.

``biolab.toy.associative_memory``: a one-hidden-layer MLP memorising random key -> class pairs,
fine-tuned on new pairs (the fine-tuning collapse, with and without replay). Run it with
``python -m biolab.toy --out DIR`` (docs/toy_memory.md).
"""
