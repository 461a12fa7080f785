"""Interpretability on trained biolab models: prompts, scores, circuits (SPEC section 9)."""
