"""Space file -> SweepPlan: grid expansion (:mod:`.grid`), Optuna distributions
(:mod:`.optuna`), resources (:mod:`.resources`), checks (:mod:`.checks`) and the plan itself
(:mod:`.plan`). No Ray here."""

from pgd.plan.plan import SweepPlan, TeacherPlan, TrialFactory, TrialPlan, build_plan, describe

__all__ = ["SweepPlan", "TeacherPlan", "TrialFactory", "TrialPlan", "build_plan", "describe"]
