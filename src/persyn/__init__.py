"""persyn: personalised multi-teacher distillation data (PerSyn, "Route then Generate")."""

__version__ = "0.1.0"
