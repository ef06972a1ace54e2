"""Steps from a wall-time budget (r2u.training.budget): the arithmetic on measured
times, and a real measurement on a small synthetic set (no wall-clock assertion:
whether real runs keep their budget is in benchmarks/results, with their wall times)."""

import os
import shutil
import tempfile
from unittest import mock

import tensorflow as tf

from r2u import config
from r2u.data import plan
from r2u.data import prepare
from r2u.data import prepared
from r2u.training import budget


def _synthetic(test):
    root = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, root, ignore_errors=True)
    prepare.prepare("synthetic", None, root, image_size=32, limit=8)
    return prepared.load(root)


def _experiment():
    exp = config.preset("synthetic")
    import dataclasses
    return dataclasses.replace(exp, model=dataclasses.replace(exp.model, filters=4,
                                                              depth=2),
                               train=dataclasses.replace(exp.train, batch_size=4))


class BudgetTest(tf.test.TestCase):

    def test_the_schedule_fills_the_budget_and_no_more(self):
        data = _synthetic(self)
        measured = {"compile_seconds": 10.0, "step_seconds": 0.5, "timed_steps": 20,
                    "validation_seconds": 4.0}
        with mock.patch.object(budget, "measure", return_value=dict(measured)):
            exp, got = budget.fit(_experiment(), data, deadline=1000.0 + 600,
                                  clock=lambda: 1000.0)
        steps, validations = exp.train.steps, got["validations"]
        self.assertEqual(steps % validations, 0)
        self.assertEqual(exp.train.steps_per_epoch * validations, steps)
        spent = (2 * 10.0 + validations * 4.0 + got["end_seconds"]
                 + steps * measured["step_seconds"])
        self.assertLessEqual(spent, 600)  # the whole schedule fits ...
        self.assertGreater(spent, budget.SAFETY * 600 - 2 * validations * 0.5)  # fills it
        self.assertEqual(validations, min(plan.VALIDATIONS,
                                          int(budget.VALIDATION_SHARE * 600 / 4.0)))
        with mock.patch.object(budget, "measure", return_value=dict(
                measured, validation_seconds=30.0)):  # dear validations: fewer of them
            _, few = budget.fit(_experiment(), data, deadline=600, clock=lambda: 0.0)
        self.assertEqual(few["validations"], int(budget.VALIDATION_SHARE * 600 / 30.0))
        self.assertEqual(exp.train.warmup_steps, min(budget.WARMUP, steps // 10))

    def test_a_budget_too_small_is_refused_naming_the_times(self):
        data = _synthetic(self)
        measured = {"compile_seconds": 30.0, "step_seconds": 2.0, "timed_steps": 5,
                    "validation_seconds": 20.0}
        with mock.patch.object(budget, "measure", return_value=measured):
            with self.assertRaisesRegex(ValueError, r"leaves 100 s.*too few steps"):
                budget.fit(_experiment(), data, deadline=100.0, clock=lambda: 0.0)

    def test_a_run_behind_its_budget_ends_sooner_never_later(self):
        # 100 of 1,000 steps done, 10 per epoch, 0.5 s a step, 2 s a validation,
        # 5 validations' time after the last step.
        self.assertEqual(budget.replanned(100, 1000, 10, 0.5, 2.0, 10_000, 5), 1000)
        left = 300.0  # 95 validations to go (90 + 5 after) cost 190 s
        self.assertEqual(budget.replanned(100, 1000, 10, 0.5, 2.0, left, 5),
                         100 + int((budget.SAFETY * left - 95 * 2.0) / 0.5))
        self.assertEqual(budget.replanned(100, 1000, 10, 0.5, 2.0, 0.0, 5), 101)

    def test_measuring_a_real_step(self):
        data = _synthetic(self)
        got = budget.measure(_experiment(), data)
        self.assertGreater(got["step_seconds"], 0.0)
        self.assertGreater(got["validation_seconds"], 0.0)
        self.assertBetween(got["timed_steps"], 1, budget.MAX_STEPS)


if __name__ == "__main__":
    tf.test.main()
