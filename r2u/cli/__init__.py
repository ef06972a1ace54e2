"""The command-line programs: `r2u-train` (`bin/train` in a checkout), `r2u-prepare`...

One module per program, each with an absl `main(argv)` and `run()`, the entry point of
both the console script and `bin/<name>`. A program that uses TensorFlow calls `setup()`
before anything imports TensorFlow. That is where the programs differ from the library:
`import r2u` changes no environment variable and no logger.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import logging as std_logging
import os
import re
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

TF_LOGS = "tf_logs"
# C++ log lines of TensorFlow's load (oneDNN banner, "Could not find cuda drivers"):
# absl writes them to stderr before its log is set up, whatever TF_CPP_MIN_LOG_LEVEL is.
_LOAD_NOISE = re.compile(
    r"(WARNING: All log messages before absl::InitializeLog\(\) is called are written "
    r"to STDERR|[IW]0000 00:00:[\d.]+ +\d+ \S+:\d+\] .*)")


def tf_logs_requested(argv) -> bool:
    """Whether the command line turns --tf_logs on (the last of its forms wins)."""
    wanted = False
    for arg in argv[1:]:
        if arg == "--":
            break
        match = re.fullmatch(r"--?(no)?tf_logs(=(.*))?", arg)
        if match:
            value = (match[3] or "true").lower()
            wanted = not match[1] and value in ("true", "t", "1")
    return wanted


def setup() -> None:
    """Environment defaults of the programs; call it before TensorFlow is imported.

    - `TF_ENABLE_ONEDNN_OPTS=1` unless set: TensorFlow leaves its oneDNN kernels off on
      x86 CPUs without AVX-512 VNNI/BF16 or AMX; on such an AMD EPYC they trained
      R2U-Net 1.8x faster in float32 (benchmarks/NOTES.md). `=0` opts out.
    - Unless --tf_logs is on the command line: `TF_CPP_MIN_LOG_LEVEL=3` unless set; the
      C++ INFO/WARNING lines that TensorFlow's load prints whatever that level says are
      dropped; TensorFlow's Python INFO lines too. r2u's own lines, and every Python
      warning and error, still show.
    Imports TensorFlow. Defines --tf_logs (once per process).
    """
    if TF_LOGS not in flags.FLAGS:
        flags.DEFINE_bool(TF_LOGS, False, "Show TensorFlow's own log lines: C++ INFO, "
                          "WARNING and ERROR (e.g. why a GPU is not used) and Python "
                          "INFO. Read before TensorFlow loads: give it on the command "
                          "line.", module_name=__name__)
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if tf_logs_requested(sys.argv):
        import tensorflow  # noqa: F401
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _quiet_python_logs()
    with _held_back_stderr():
        import tensorflow  # noqa: F401,F811


def run(main, module_name: str, doc: str) -> None:
    """`app.run(main)`, with `module_name`'s docstring and flags as the program's help.

    absl's --help shows the flags of the program's main module and its docstring; here
    that module is `bin/<name>` or a console script, which define neither.
    """
    program = sys.modules["__main__"]
    if not getattr(program, "__doc__", None):
        program.__doc__ = doc
    for module in (module_name, __name__):
        for flag in flags.FLAGS.get_key_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(main)


def entry_point(main):
    """The program's `run()`, entry point of its console script and `bin/<name>`: `run`
    with the help taken from `main`'s module."""
    module = sys.modules[main.__module__]
    return functools.partial(run, main, module.__name__, module.__doc__)


@dataclasses.dataclass(frozen=True)
class ModelFlags:
    """The FlagHolders of `define_model_flags`."""
    model_dir: flags.FlagHolder
    source: flags.FlagHolder
    threshold: flags.FlagHolder
    tile: flags.FlagHolder
    stride: flags.FlagHolder
    mode: flags.FlagHolder
    window: flags.FlagHolder
    overlap: flags.FlagHolder

    def predictor(self):
        """The model of --model_dir/--source, in the inference mode of --mode (default:
        the model's own, chosen on validation images)."""
        from r2u.inference import loading  # imports TensorFlow: not before setup()
        predictor = loading.load(self.model_dir.value, self.source.value)
        if self.mode.value:
            predictor = predictor.with_inference(self.mode.value, self.window.value,
                                                 self.overlap.value)
        return predictor


def define_model_flags(tile_help: str) -> ModelFlags:
    """--model_dir, --source, --threshold, --tile, --stride, --mode, --window and
    --overlap of the programs that run a trained model (evaluate, predict), defined
    once so that they cannot drift apart.

    Only --tile's help differs, as the programs tile differently. The flags are key
    flags of this module, which `run` adds to the program's --help. Call it after
    `setup()`.
    """
    from r2u.inference import loading  # imports TensorFlow: not before setup()
    return ModelFlags(
        model_dir=flags.DEFINE_string(
            "model_dir", None, "Training folder or SavedModel folder.", required=True),
        source=flags.DEFINE_enum(
            "source", "auto", loading.SOURCES,
            "auto: checkpoint if present, else the SavedModel."),
        threshold=flags.DEFINE_float(
            "threshold", None, "Foreground iff probability > this (default: the "
            "model's, chosen on validation images).", lower_bound=0.0,
            upper_bound=1.0),
        tile=flags.DEFINE_integer("tile", 0, tile_help, lower_bound=0),
        stride=flags.DEFINE_integer("stride", 0, "Tile offset (0: tile // 2).",
                                    lower_bound=0),
        mode=flags.DEFINE_enum(
            "mode", None, ["whole", "sliding_window"], "Inference mode (default: the "
            "model's, chosen on validation images): whole images, or windows of "
            "--window px overlapping by --overlap, weighted by a Gaussian."),
        window=flags.DEFINE_integer("window", None, "Sliding-window side (a multiple "
                                    "of 2**depth).", lower_bound=1),
        overlap=flags.DEFINE_float("overlap", 0.5, "Share of a window its neighbours "
                                   "overlap.", lower_bound=0.0, upper_bound=0.95))


def checkout_root():
    """The repository folder when r2u runs from a checkout (as bin/* do), else None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return root if os.path.isfile(os.path.join(root, "setup.cfg")) else None


class _NotTensorFlowInfo(std_logging.Filter):
    """Drops records below WARNING logged through absl from TensorFlow's own files
    ("Sharding callback duration" at every checkpoint save, SavedModel notices)."""

    def __init__(self, folder: str):
        super().__init__()
        self._folder = folder

    def filter(self, record) -> bool:
        return (record.levelno >= std_logging.WARNING
                or not record.pathname.startswith(self._folder))


def _quiet_python_logs() -> None:
    std_logging.getLogger("tensorflow").setLevel(std_logging.WARNING)
    spec = importlib.util.find_spec("tensorflow")
    if spec and spec.submodule_search_locations:
        folder = os.path.join(os.path.realpath(spec.submodule_search_locations[0]), "")
        logging.get_absl_logger().addFilter(_NotTensorFlowInfo(folder))


@contextlib.contextmanager
def _held_back_stderr():
    """Sends file descriptor 2 to a temporary file for the block, then writes it back
    without the load noise (all of it if the block raised)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to hold back
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", "replace")
            lines = text.splitlines(keepends=True)
            if not failed:
                lines = [l for l in lines if not _LOAD_NOISE.fullmatch(l.rstrip("\n"))]
            sys.stderr.write("".join(lines))
            sys.stderr.flush()
