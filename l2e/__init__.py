"""l2e: turn decoder-only LLMs into text-embedding models, one JSON config at a time.

The package follows the data's walk, one room (subpackage) per kind of component; ``FLOORS`` orders the rooms and
imports only go down the floors (``tests/test_layout.py`` fails on an upward import, between rooms of one floor, or
on a cycle). README.md's "Layout" says what lives in each room and where each kind of change goes.
"""
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Bottom to top. A module may import its own room and any room on a lower floor; rooms of one floor stay
# independent of each other. ``config`` is a floor of its own: it names model settings (pooling modes, precisions)
# and tokenization, mining and training all validate against it.
FLOORS = (("core",), ("model",), ("config",), ("data", "losses"), ("export",), ("retrieval",), ("train",))

# Old flat module names that must keep working after the move into subpackages (issue 24), and why:
MOVED = {
    "l2e.tiny": "l2e.model.tiny",  # `python -m l2e.tiny` (README, configs/cpu/tiny.*, benchmarks)
    "l2e.onnx_export": "l2e.export.onnx_export",  # `python -m l2e.onnx_export` (README, model cards, error messages)
    # modules.json of folders exported before the move names l2e.st_modules.TrainablePooling / LexicalWeights
    "l2e.st_modules": "l2e.export.st_modules",
    "l2e.embedder": "l2e.retrieval.embedder",  # the usage snippet in model cards written before the move
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old name as the very module object of its new one (one copy: registries and error classes stay
    single), and gives runpy the new file's code, so ``python -m OLD`` runs it as ``__main__``."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        real = importlib.util.find_spec(MOVED[name])
        return importlib.util.spec_from_loader(name, self, origin=real.origin)

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # already executed under its new name

    def get_code(self, name):
        new = MOVED[name]
        return importlib.util.find_spec(new).loader.get_code(new)


# First in line: a stale copy of an old module still reachable through another finder (an editable install of an
# older checkout, a wheel built before the move) must not shadow the alias and split the registries in two.
if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedFinder())
