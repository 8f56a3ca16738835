"""Route every prompt to one teacher: argmax of the router's scores, or the best assignment under caps.

Modules: `solve` (`route_prompts`: checks the limits and picks a solver, `RoutingResult`,
`TeacherCap`), `capped` (count caps, exact), `budget` (an overall budget, bounded).
This file only re-exports the package's public names.
"""

from persyn.assignment.solve import (
    RoutingInfeasibleError,
    RoutingResult,
    TeacherCap,
    cost_per_prompt,
    route_prompts,
)

__all__ = [
    "RoutingInfeasibleError",
    "RoutingResult",
    "TeacherCap",
    "cost_per_prompt",
    "route_prompts",
]
