"""benchmarks/tables.py: the ablation table names only the lever a run changed."""

import importlib.util
import json
import os
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SPEC = importlib.util.spec_from_file_location(
    "tables", os.path.join(ROOT, "benchmarks", "tables.py"))
tables = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tables)


def _result(config: dict, jaccard: float) -> dict:
    scores = {"jaccard": jaccard, "auc": 0.99}
    return {"config": config, "train_seconds": 600,
            "validation": {"headline": "per_image_jaccard", "best_score": jaccard},
            "evaluation": {"per_image_mean": scores, "inference": {"threshold": 0.5}}}


class AblationTableTest(unittest.TestCase):

    def test_a_config_from_before_the_preprocessing_spec_differs_only_by_its_lever(self):
        old = {"data": {"dataset": "isic", "contrast": False}, "model": {"in_channels": 3},
               "train": {"loss": "ce+dice", "seed": 0}, "inference": {"threshold": 0.7}}
        new = {"data": {"dataset": "isic"}, "model": {"in_channels": 3},
               "preprocessing": {"channels": 3, "contrast": False,
                                 "standardize_in_fov": False},
               "train": {"loss": "wce", "seed": 0}, "inference": {"threshold": 0.8}}
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for name, result in (("base", _result(old, 0.75)), ("wce", _result(new, 0.70))):
                paths.append(os.path.join(tmp, f"{name}.json"))
                with open(paths[-1], "w") as f:
                    json.dump(result, f)
            rows = tables.ablation_table(paths).splitlines()
        self.assertTrue(rows[2].startswith("| baseline | 0.7500 | 0.7500 (0.50) | +0.0000"))
        self.assertTrue(rows[3].startswith("| loss=wce | 0.7000 | 0.7000 (0.50) | -0.0500"),
                        rows[3])


if __name__ == "__main__":
    unittest.main()
