"""Property checks of the book's key functions, shared by the test suite and the course assignments.

Each check takes the function under test (the package's own, or a student's version written in an
assignment notebook), runs it on small inputs, and raises `CheckFailed` (an `AssertionError`) with a
message that says what was expected, on which input, and what came back. The unit tests in `tests/`
run these same checks on the package, so a property is written once.

`EXERCISES` lists, per chapter, the functions an assignment leaves for the student, the points each
earns, the checks a student runs in the notebook (`public`) and the extra ones run only when grading
(`hidden`). `otter_notebook(chapter)` sets up otter-grader's `grader.check(...)` for an assignment
notebook, anywhere it runs (Colab, a laptop, the grader).

The checks live in one module per part of the book (`processes`: chapters 1-2, `model`: 3-5,
`samplers`: 6, `scores`: 7) and the assignment machinery in `assignments`; every name is
imported here, so `checks.q_sample_is_eq4` and `checks.EXERCISES` are the names to use.

Plumbing package (hand-written).
"""
from .assignments import *  # noqa: F401,F403
from .base import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .processes import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .scores import *  # noqa: F401,F403
from . import assignments, base, model, processes, samplers, scores

__all__ = [*base.__all__, *processes.__all__, *model.__all__, *samplers.__all__, *scores.__all__, *assignments.__all__]
