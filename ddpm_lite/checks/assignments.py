"""The course assignments: which functions each chapter's assignment leaves for the student (EXERCISES),
their otter-grader test files, and the `otter.Notebook` of an assignment notebook.

Plumbing module (hand-written); see ddpm_lite.checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .model import *  # noqa: F401,F403  (the checks that EXERCISES names)
from .processes import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .scores import *  # noqa: F401,F403

__all__ = ["Exercise", "EXERCISES", "chapters", "exercises", "exercise", "test_case_source", "public_test_file",
           "write_public_tests", "otter_notebook"]


@dataclass(frozen=True)
class Exercise:
    """A function an assignment leaves for the student: its chapter (notebook name), points and checks."""
    chapter: str
    function: str
    points: int
    public: tuple     # checks the student runs in the notebook
    hidden: tuple     # further checks run only when grading


EXERCISES = (
    Exercise("01_forward_process", "q_sample", 2, (q_sample_is_eq4,), (q_sample_draws_its_own_noise,)),
    Exercise("01_forward_process", "q_step", 2, (q_step_iterates_to_eq4,), (q_step_is_eq2,)),
    Exercise("02_reverse_process", "posterior_variance", 2, (posterior_variance_is_closed_form,),
             (posterior_variance_bounds,)),
    Exercise("02_reverse_process", "posterior_coefficients", 2, (posterior_coefficients_give_the_mean,),
             (posterior_coefficients_at_the_first_step,)),
    Exercise("02_reverse_process", "predict_x0", 1, (predict_x0_inverts_q_sample,), (predict_x0_keeps_float32,)),
    Exercise("02_reverse_process", "mu_from_eps", 2, (mu_from_eps_is_posterior_mean,), (mu_from_eps_broadcasts_one_step,)),
    Exercise("03_unet", "sinusoidal_embedding", 2, (sinusoidal_embedding_is_the_formula,),
             (sinusoidal_embedding_separates_steps,)),
    Exercise("04_guidance", "drop_labels", 2, (drop_labels_drops_with_probability_p,), (drop_labels_is_reproducible,)),
    Exercise("04_guidance", "guided_eps", 3, (guided_eps_is_eq6,), (guided_eps_label_blind_model,)),
    Exercise("05_training", "diffusion_loss", 3, (diffusion_loss_is_algorithm_1,), (diffusion_loss_has_gradients,)),
    Exercise("06_sampling", "ancestral_sample", 3, (ancestral_sample_reproduces_gaussian_data,),
             (ancestral_sample_matches_the_chapter,)),
    Exercise("06_sampling", "ddim_timesteps", 1, (ddim_timesteps_spacing,), (ddim_timesteps_one_step,)),
    Exercise("06_sampling", "ddim_sample", 3, (ddim_sample_reproduces_gaussian_data,), (ddim_sample_eta1_is_ancestral,)),
    Exercise("07_evaluation", "inception_score", 2, (inception_score_extremes,), (inception_score_shuffles_and_bounds,)),
)


def chapters() -> list[str]:
    """The chapters (notebook names without .ipynb) that have an assignment, in reading order."""
    return sorted({e.chapter for e in EXERCISES})


def exercises(chapter: str) -> list[Exercise]:
    """The exercises of one chapter, in the order of the chapter's text."""
    found = [e for e in EXERCISES if e.chapter == chapter]
    if not found:
        raise ValueError(f"no assignment for chapter {chapter!r}; the chapters with one are: {', '.join(chapters())}.")
    return found


def exercise(function: str) -> Exercise:
    """The exercise that asks for `function`."""
    for e in EXERCISES:
        if e.function == function:
            return e
    raise ValueError(f"no exercise asks for {function!r}; see ddpm_lite.checks.EXERCISES.")


def test_case_source(check: Callable, function: str) -> str:
    """The body of one otter-grader test case: it calls `check` on the notebook's `function`."""
    return (f"def test_{check.__name__}({function}):\n"
            f"    from ddpm_lite import checks\n"
            f"    checks.{check.__name__}({function})")


def public_test_file(ex: Exercise) -> str:
    """The student-side otter-grader test file of one exercise (its public checks only)."""
    cases = "".join(f"@test_case(points=None, hidden=False)\n{test_case_source(c, ex.function)}\n\n" for c in ex.public)
    return (f"from otter.test_files import test_case\n\nOK_FORMAT = False\n\nname = \"{ex.function}\"\n"
            f"points = {ex.points}\nall_or_nothing = True\n\n{cases}")


def write_public_tests(chapter: str, tests_dir="tests") -> Path:
    """Write the public test files of `chapter` into tests_dir, keeping any that exist already."""
    tests_dir = Path(tests_dir)
    tests_dir.mkdir(parents=True, exist_ok=True)
    for ex in exercises(chapter):
        path = tests_dir / f"{ex.function}.py"
        if not path.exists():
            path.write_text(public_test_file(ex))
    return tests_dir


def otter_notebook(chapter: str, tests_dir="tests"):
    """An `otter.Notebook` for the assignment of `chapter`; `grader.check("q_sample")` then runs q_sample's checks.

    Works wherever the notebook runs: the test files come with the assignment's folder, and when they
    are missing (a notebook opened alone, as in Colab) they are written from this module."""
    try:
        import otter
    except ImportError:
        raise ImportError("the assignment checks need otter-grader: run `pip install otter-grader==7.0.0` "
                          "(or `pip install \"ddpm_lite[assignments]\"`) and run this cell again.") from None
    if not otter.Notebook._grading_mode:   # when grading, otter brings the full tests (hidden ones too)
        write_public_tests(chapter, tests_dir)
    return otter.Notebook(tests_dir=str(tests_dir))
