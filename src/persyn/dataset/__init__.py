"""Export: the routed responses as SFT datasets in the formats trainers read, plus a data card.

Modules: `export` (`export_dataset`: one folder per export, crash-safe), `rows` (the rows and
their provenance), `formats` (one writer per format), `card` (the data card).
This file only re-exports the package's public names.
"""

# The modules' own __all__ lists are the one list of the package's public names.
from persyn.dataset import export
from persyn.dataset.export import *  # noqa: F403

__all__ = export.__all__
