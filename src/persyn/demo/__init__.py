"""The bundled demo prompt set: generated math word problems (with answers) and hand-written
general instructions, shipped inside the package so `make demo` needs no download.

Modules: `bundled` (the demo prompt set and its held-out split), `math_problems`,
`math_templates` and `math_vocabulary` (the math generator), `constraint_prompts` (instructions with
IFEval constraints), `project` (the folder `persyn demo` writes).
This file only re-exports the package's public names.
"""

# The modules' own __all__ lists are the one list of the package's public names.
from persyn.demo import bundled
from persyn.demo.bundled import *  # noqa: F403

__all__ = bundled.__all__
