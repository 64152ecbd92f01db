"""The collaboration paradigms and baselines, one module each; importing one registers it."""
