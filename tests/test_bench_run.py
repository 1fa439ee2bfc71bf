"""How a bench runs its evaluators: order from `requires`, skips, loud failures, parameters (no images needed)."""

from __future__ import annotations

import pytest

from harmkit import EvaluationResult, Evaluator, HarmkitError
from harmkit.bench.run import evaluator_order, run_evaluators
from harmkit.errors import EvaluatorSkipped
from harmkit.plugins import PluginInfo, get_registry


def test_evaluators_run_after_those_they_require_and_otherwise_in_registration_order():
    order = evaluator_order(
        {
            "quality": (),
            "fidelity": ("prediction",),
            "prediction": (),
            "mine": ("fidelity", "quality"),
        }
    )
    assert order == ["quality", "prediction", "fidelity", "mine"]


def test_a_requirement_cycle_is_an_error_naming_it():
    with pytest.raises(HarmkitError, match="a -> b -> a"):
        evaluator_order({"a": ("b",), "b": ("a",)})


class _Context:
    """The two things run_evaluators needs from a BenchContext."""

    def __init__(self):
        from harmkit.bench.config import BenchConfig

        self.config = BenchConfig(params={})
        self.results: dict = {}

    def result(self, name):
        return self.results.get(name)


class Counting(Evaluator):
    name = "counting"
    description = "counts"

    def __init__(self, step: int = 1, random_state: int | None = None):
        self.step = step
        self.random_state = random_state

    def evaluate(self, context):
        return EvaluationResult(self.name, summary={"step": self.step, "seed": self.random_state})


class NeedsCounting(Evaluator):
    name = "needs-counting"
    description = "reads counting"
    requires = ("counting",)

    def evaluate(self, context):
        return EvaluationResult(self.name, summary={"seen": context.results["counting"].summary["step"]})


class NothingToDo(Evaluator):
    name = "nothing"
    description = "skips"

    def evaluate(self, context):
        raise EvaluatorSkipped("the cohort has no ground truth")


class Broken(Evaluator):
    name = "broken"
    description = "fails"

    def evaluate(self, context):
        raise HarmkitError("table 'x' is missing")


@pytest.fixture
def registry_with(monkeypatch):
    def install(*classes):
        registry = get_registry()
        monkeypatch.setattr(registry, "plugins", dict(registry.plugins))
        for key in [k for k, info in registry.plugins.items() if info.kind == "evaluator"]:
            del registry.plugins[key]
        for cls in classes:
            registry.plugins[("evaluator", cls.name)] = PluginInfo(
                cls.name, "evaluator", cls, "test-plugins", "1.0", cls.description
            )
        return registry

    return install


def test_requirements_run_first_parameters_and_the_seed_reach_the_evaluator_and_skips_are_reported(
    registry_with,
):
    registry_with(NeedsCounting, Counting, NothingToDo)
    ctx = _Context()
    ctx.config.params = {"counting": {"step": 3}}
    timings: dict = {}
    run_evaluators(ctx, _Quiet(), timings)
    assert list(ctx.results) == ["counting", "needs-counting", "nothing"]
    assert ctx.results["counting"].summary == {"step": 3, "seed": ctx.config.seed}
    assert ctx.results["needs-counting"].summary == {"seen": 3}
    assert ctx.results["nothing"].skipped == "the cohort has no ground truth"
    assert set(timings) == {
        "evaluator counting",
        "evaluator needs-counting",
        "evaluator nothing",
    }


def test_an_evaluator_runs_after_a_skipped_requirement_and_sees_the_skip(registry_with):
    class ReadsNothing(NeedsCounting):
        name = "reads-nothing"
        requires = ("nothing",)

        def evaluate(self, context):
            return EvaluationResult(self.name, summary={"seen": context.result("nothing").skipped})

    registry_with(NothingToDo, ReadsNothing)
    ctx = _Context()
    run_evaluators(ctx, _Quiet(), {})
    assert ctx.results["reads-nothing"].summary == {"seen": "the cohort has no ground truth"}


def test_an_evaluator_whose_requirement_is_not_installed_is_skipped_with_the_reason(registry_with):
    registry_with(NeedsCounting)
    ctx = _Context()
    run_evaluators(ctx, _Quiet(), {})
    assert "needs evaluator(s) counting, which are not installed" in ctx.results["needs-counting"].skipped


def test_a_failing_evaluator_stops_the_bench_with_its_name_and_distribution(
    registry_with,
):
    registry_with(Counting, Broken)
    with pytest.raises(
        HarmkitError,
        match=r"evaluator 'broken' \(from test-plugins 1.0\) failed: table 'x' is missing",
    ):
        run_evaluators(_Context(), _Quiet(), {})


class _Quiet:
    def log(self, *args, **kwargs):
        pass
