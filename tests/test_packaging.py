"""The distribution installs one top-level package, `convnet_repro`.

Its subpackages are the checkout's `layers/`, `models/`, `experiments/` and
`conf/` (`setup.py`); installed from the wheel they work without the
repository (no repo root on `sys.path`) and put no `layers`, `models` or
`experiments` module into a user's environment.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMESPACE = "convnet_repro"
FOLDERS = ("layers", "models", "experiments", "conf")
BUILD_INPUTS = FOLDERS + (NAMESPACE, "setup.py", "pyproject.toml", "README.md")
# Runs in the installed copy, from a folder outside the checkout.
CHECK = r"""
import json, sys
import hydra
import numpy as np
import convnet_repro.layers
from convnet_repro.experiments.engine.compose import compose
from convnet_repro.models import build

model = build("tiny_cnn", input_shape=(16, 16, 1), num_classes=3)
logits = model(np.zeros((2, 16, 16, 1), "float32"))
cfg = compose(["experiment=smoke"])
train_ds, _ = hydra.utils.instantiate(cfg.data, _convert_="all")
x, _ = next(iter(train_ds))
smoke = hydra.utils.instantiate(cfg.model)
print(json.dumps({
    "files": sorted(
        m.__file__ for n, m in list(sys.modules.items())
        if n.split(".")[0] == "convnet_repro" and getattr(m, "__file__", None)
    ),
    "top_level": sorted(
        n for n in sys.modules if n.split(".")[0] in FOLDERS
    ),
    "sys_path": sys.path,
    "logits": list(logits.shape),
    "smoke_logits": list(smoke(x).shape),
}))
""".replace("FOLDERS", repr(("layers", "models", "experiments")))


def _renamed():
    """True once the code imports itself as `convnet_repro.*`."""
    return f"from {NAMESPACE}." in (ROOT / "models" / "__init__.py").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Built from a copy: pip/setuptools write build/ and *.egg-info next to
    # setup.py, which must not land in (or race on) the checkout.
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps"]
        + ["--no-build-isolation", "-w", str(dist), str(src)],
        check=True,
        capture_output=True,
    )
    (path,) = dist.glob("convnet_repro-*.whl")
    return path


def test_wheel_holds_every_module_and_config_under_the_namespace(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {NAMESPACE}, top
    expected = {
        f"{NAMESPACE}/{p.relative_to(ROOT).as_posix()}"
        for folder in FOLDERS
        for p in (ROOT / folder).rglob("*")
        if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts
    }
    assert expected - names == set()
    assert f"{NAMESPACE}/conf/experiment/smoke.yaml" in names
    assert not any("tests/" in n or "benchmarks/" in n for n in names)


@pytest.mark.slow
@pytest.mark.skipif(
    not _renamed(),
    reason="imports still name top-level layers/models/experiments; run "
    "the namespace rename (convnet_repro.*) first",
)
def test_installed_wheel_works_without_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps"]
        + ["--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in target.iterdir() if p.name != "bin") == [
        NAMESPACE,
        wheel.name.split("-py3")[0] + ".dist-info",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), KERAS_BACKEND="tensorflow")
    proc = subprocess.run(
        [sys.executable, "-c", CHECK],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert str(ROOT) not in out["sys_path"]
    assert out["files"] and all(
        f.startswith(str(target / NAMESPACE)) for f in out["files"]
    ), [f for f in out["files"] if not f.startswith(str(target))]
    assert out["top_level"] == []
    assert out["logits"] == [2, 3] and out["smoke_logits"] == [16, 4]
