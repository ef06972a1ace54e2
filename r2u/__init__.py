"""r2u: R2U-Net and its family (U-Net, ResU-Net, RU-Net, attention R2U-Net) in TensorFlow.

The packages, one concept each, importing only downward (`tests/layout_test.py`):

    r2u.cli          the r2u-* command-line programs
    r2u.training     host loop, compiled step, losses, optimiser, distribution, records
    r2u.evaluation   metrics, operating point, scoring, test-set evaluation
    r2u.inference    loading a trained model, sliding windows, prediction, export
    r2u.data         readers, fingerprint and plan, preparation, tf.data pipeline
    r2u.nn           layers, blocks, the U-Net family, the Keras 3 adapter
    r2u.config, r2u.errors, r2u.files, r2u.figures, r2u.devices   shared by all

The names below are the public API, imported on first use: importing r2u sets no
environment variable and imports no TensorFlow. On x86 CPUs without AVX-512 VNNI/BF16
or AMX, TensorFlow's oneDNN kernels stay off unless TF_ENABLE_ONEDNN_OPTS=1 is in the
environment before TensorFlow is imported; the r2u-* commands set it (r2u.cli), and
`r2u.devices` logs a hint once when it is missed.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# Public name -> "module:attribute".
_PUBLIC = {
    "Experiment": "r2u.config:Experiment",
    "ModelConfig": "r2u.config:ModelConfig",
    "DataConfig": "r2u.config:DataConfig",
    "TrainConfig": "r2u.config:TrainConfig",
    "Preprocessing": "r2u.config:Preprocessing",
    "preset": "r2u.config:preset",
    "build": "r2u.nn.models:build",
    "UNet": "r2u.nn.models:UNet",
    "R2UNetLayer": "r2u.nn.keras_layer:R2UNetLayer",
    "prepare": "r2u.data.prepare:prepare",
    "load_data": "r2u.data.prepared:load",
    "train": "r2u.training.loop:train",
    "load_model": "r2u.inference.loading:load",
    "evaluate": "r2u.evaluation.evaluate:evaluate",
}
__all__ = sorted(_PUBLIC)

# Modules that sat directly under r2u before the concept packages: `from r2u import
# models` and `import r2u.keras_layer` still work, with one FutureWarning per name.
# (`r2u.train` is now the training function; its module is r2u.training.loop.)
MOVED = {
    "layers": "r2u.nn.layers", "blocks": "r2u.nn.blocks", "models": "r2u.nn.models",
    "keras_layer": "r2u.nn.keras_layer",
    "train_step": "r2u.training.step", "epochs": "r2u.training.epochs",
    "run_record": "r2u.training.run_record", "losses": "r2u.training.losses",
    "optim": "r2u.training.optim", "distribute": "r2u.training.distribute",
    "faults": "r2u.training.faults", "summaries": "r2u.training.summaries",
    "metrics": "r2u.evaluation.metrics", "scoring": "r2u.evaluation.scoring",
    "operating_point": "r2u.evaluation.operating_point",
    "checkpoints": "r2u.inference.loading", "export": "r2u.inference.export",
    "predict": "r2u.inference.predict",
}


def __getattr__(name):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name].split(":")
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if name in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as a thin module reading the new one."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package == __name__ and name in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a plain new module

    def exec_module(self, module: types.ModuleType) -> None:
        new = MOVED[module.__name__.partition(".")[2]]
        warnings.warn(f"{module.__name__} moved to {new}; import it from there",
                      FutureWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__getattr__ = lambda attribute: getattr(target, attribute)
        module.__dir__ = lambda: dir(target)
        module.__doc__ = f"Moved to {new}."


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
