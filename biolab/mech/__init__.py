"""Mechanistic analysis of biolab snapshots (SPEC section 9), run through the one run loader (biolab.runs).

    prompts.py   attribute-recall prompts and their counterfactual counterparts (PromptSet)
    scoring.py   logit difference, ranks, Hit@k, whole-value ranks, prompt accuracy, a seeded sampler
    graph.py     the edge graph; edge patching, EAP, EAP-IG, exact single-edge patching
    circuits.py  one snapshot's knowledge circuit: faithfulness against budget, random controls, head roles
    circuits_study.py, track.py, plots.py   the same over every snapshot of a run, its table and timeline
    overshadowing.py, overshadowing_study.py   look-alike pairs: AO, R_dom, RO per P; over snapshots, circuit view
    export.py    a TransformerLens HookedTransformer of any snapshot
    entities.py, sae.py, steering.py, entities_sae.py, entities_study.py, entities_report.py
                 known vs unknown people: sets, probes per layer, a TopK SAE, steering, across training
    unknown_answer.py, unknown_study.py   a model fine-tuned to answer <unknown>: the base model's latents
                 steering it, the unknown direction ablated from its weights

    python -m biolab.mech circuits RUN_DIR        # writes RUN_DIR/mech/circuits/
    python -m biolab.mech overshadowing RUN_DIR   # writes RUN_DIR/mech/overshadowing/
    python -m biolab.mech export RUN_DIR step=K   # writes RUN_DIR/mech/export/step_<K>/
    python -m biolab.mech entities RUN_DIR        # writes RUN_DIR/mech/entities/
    python -m biolab.mech unknown RUN_DIR         # writes RUN_DIR/mech/unknown/ (an experiment=unknown_cpu run)

Only the export needs the `mech` extra (TransformerLens: pip install -e ".[mech]"); everything else runs
on the core install.
"""
