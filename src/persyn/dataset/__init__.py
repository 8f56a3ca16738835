"""Export: the routed responses as SFT datasets in the formats trainers read, plus a data card.

Modules: `export` (`export_dataset`: one folder per export, crash-safe), `rows` (the rows and
their provenance), `formats` (one writer per format), `card` (the data card).
This file only re-exports the package's public names.
"""

from persyn.dataset.export import (
    FORMATS,
    DataCard,
    ExportError,
    ExportRecord,
    export_dataset,
    render_card,
    scrub_secrets,
)

__all__ = [
    "FORMATS",
    "DataCard",
    "ExportError",
    "ExportRecord",
    "export_dataset",
    "render_card",
    "scrub_secrets",
]
