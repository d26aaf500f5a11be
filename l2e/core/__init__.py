"""Shared basics every other room may use and that use nothing of l2e: the error base class and one-line
``error: ...`` reporting (``errors``), atomic files and folders (``atomic``: temp file or folder, then rename), the
name registries (``registry``), command-line options generated from an options dataclass (``cli``) and the run
folder's paths (``run_layout``: names only, no I/O). A helper goes here only when it knows nothing about models,
data or training internals and at least two rooms need it; anything else belongs in the room that uses it."""
