"""Import single modules of third-party packages whose ``__init__`` pulls in torchvision.

``piq`` and ``torch-fidelity`` import torchvision from their package
``__init__``; torchvision has no build for the project's torch version. The
modules seg2med uses (``piq.fsim`` and its ``piq.utils`` / ``piq.functional``
helpers, ``torch_fidelity.feature_extractor_inceptionv3`` and its helpers)
need only torch. :func:`import_bare` registers the package in
:data:`sys.modules` as a bare namespace (its ``__path__`` points at the
installed folder, its ``__init__`` is never run) and then imports the wanted
submodule normally, so the submodule's absolute imports resolve.

If the real package was already imported (e.g. torchvision is available in
another environment), that package is used as is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

from seg2med.errors import MissingDependencyError

#: ``pip`` line that installs each optional package without its torchvision dependency.
INSTALL_HINT = {
    "piq": "pip install --no-deps piq==0.8.0",
    "torch_fidelity": "pip install --no-deps torch-fidelity==0.4.0",
}


def import_bare(package: str, submodule: str) -> types.ModuleType:
    """Import ``package.submodule`` without executing ``package/__init__.py``.

    Raises:
        MissingDependencyError (an ImportError): ``package`` is not installed (the message names the install command).
    """
    full = f"{package}.{submodule}"
    if full in sys.modules:
        return sys.modules[full]
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            hint = INSTALL_HINT.get(package, f"pip install {package}")
            raise MissingDependencyError(f"{package} is not installed; install it with `{hint}`")
        bare = types.ModuleType(package, f"bare namespace for {package} (its __init__ is not run by seg2med)")
        bare_spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        bare_spec.submodule_search_locations = list(spec.submodule_search_locations)
        bare.__spec__ = bare_spec
        bare.__path__ = list(spec.submodule_search_locations)
        bare.__seg2med_bare__ = True  # type: ignore[attr-defined]
        sys.modules[package] = bare
    return importlib.import_module(full)
