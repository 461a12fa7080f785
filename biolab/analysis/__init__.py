"""Analysis of sweeps: collect a sweep directory into one table, fits and figures per study.

    python -m biolab.analysis table SWEEP_DIR          # table.csv of every job (overrides + summary)
    python -m biolab.analysis population SWEEP_DIR     # + learning curves per N, plateau scaling law
    python -m biolab.analysis patching|finetune|hallucination ...   # see each module's docstring
"""
