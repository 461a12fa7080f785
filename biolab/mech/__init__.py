"""Mechanistic analysis of biolab checkpoints (SPEC section 9): circuits, overshadowing, neurons,
entity directions, and export to TransformerLens (export.py). Needs the `mech` extra:
pip install -e ".[mech]"."""
