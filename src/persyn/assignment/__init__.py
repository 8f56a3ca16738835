"""Route every prompt to one teacher: argmax of the router's scores, or the best assignment under caps.

Modules: `solve` (`route_prompts`: checks the limits and picks a solver, `RoutingResult`,
`TeacherCap`), `capped` (count caps, exact), `budget` (an overall budget, bounded).
This file only re-exports the package's public names.
"""

# The modules' own __all__ lists are the one list of the package's public names.
from persyn.assignment import solve
from persyn.assignment.solve import *  # noqa: F403

__all__ = solve.__all__
