"""Installs the top-level folders as subpackages of `convnet_repro`.

The metadata lives in `pyproject.toml`; only the package mapping is here,
because `[tool.setuptools.packages.find]` cannot put a prefix in front of
the packages it finds, and a static `packages` list in `pyproject.toml`
would have to be edited for every new subpackage. See
`convnet_repro/__init__.py` for how a checkout finds the same packages.
"""

import pathlib

import setuptools

NAMESPACE = "convnet_repro"
FOLDERS = ("layers", "models", "experiments")

packages = [NAMESPACE]
package_dir = {NAMESPACE: NAMESPACE}
for folder in FOLDERS:
    package_dir[f"{NAMESPACE}.{folder}"] = folder
    packages += [
        f"{NAMESPACE}.{name}"
        for name in setuptools.find_packages(include=[folder, f"{folder}.*"])
    ]
# The Hydra configs (YAML only, no `__init__.py`): `conf/` ships as
# `convnet_repro/conf`, where `experiments.engine.compose` looks for it.
package_dir[f"{NAMESPACE}.conf"] = "conf"
conf_dirs = sorted(p for p in pathlib.Path("conf").rglob("*") if p.is_dir()) + [
    pathlib.Path("conf")
]
packages += [f"{NAMESPACE}." + ".".join(p.parts) for p in conf_dirs]

setuptools.setup(
    packages=packages,
    package_dir=package_dir,
    package_data={name: ["*.yaml"] for name in packages},
)
