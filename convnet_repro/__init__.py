"""The distribution's one top-level package over `layers/`, `models/`, ...

`convnet_repro.layers`, `convnet_repro.models`, `convnet_repro.experiments`
and the configs `convnet_repro/conf` are the repository's top-level folders
`layers/`, `models/`, `experiments/` and `conf/`. Installed (a wheel, see
`setup.py`), they are copied under `convnet_repro/`. In a checkout they stay
at the repository root, and this file adds the root to the package's search
path (`__path__`), so `import convnet_repro.layers` works from the root
without installing. Other distributions' `layers`, `models` or
`experiments` modules are therefore never shadowed (nor shadow ours).
"""

import pathlib

_HERE = pathlib.Path(__file__).resolve().parent
if not (_HERE / "layers").is_dir():  # a checkout, not an installed wheel
    __path__.append(str(_HERE.parent))
