"""The installed ``aio_client`` is this project's: an unrelated project on the package registry
(``aio-client``) uses the same import name, and installing it next to ours would shadow us."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import distribution, packages_distributions
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import aio_client

ROOT = Path(__file__).resolve().parent.parent
with (ROOT / "pyproject.toml").open("rb") as _file:
    DISTRIBUTION = tomllib.load(_file)["project"]["name"]


def test_the_distribution_name_is_not_the_taken_one() -> None:
    """pyproject.toml names the distribution aio-client-resilient, not the registry's aio-client."""
    assert DISTRIBUTION == "aio-client-resilient"


def test_the_imported_aio_client_is_ours() -> None:
    """``import aio_client`` loads the package our distribution installed, and no other
    installed distribution has files under ``aio_client/``."""
    ours = distribution(DISTRIBUTION)
    assert set(packages_distributions().get("aio_client", [])) <= {DISTRIBUTION}
    init = next((f for f in ours.files or () if f.parts == ("aio_client", "__init__.py")), None)
    if init is not None:  # installed from a wheel
        installed = Path(str(init.locate())).resolve().parent
    else:  # an editable install lists a .pth file, and says where the source tree is
        direct_url = json.loads(ours.read_text("direct_url.json") or "{}")
        assert direct_url["dir_info"].get("editable") is True
        installed = Path(url2pathname(urlparse(direct_url["url"]).path)) / "aio_client"
    assert Path(aio_client.__file__).resolve().parent == installed.resolve()


def test_a_built_wheel_maps_aio_client_to_our_distribution(tmp_path: Path) -> None:
    """``pip wheel .`` builds a wheel whose installed files make ``packages_distributions()``
    map ``aio_client`` to our distribution name alone, with the ``aio-client`` script."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("aio_client_resilient-*-py3-none-any.whl")
    target = tmp_path / "site"
    installed = subprocess.run(
        [*pip, "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    code = (
        "import importlib.metadata as m, aio_client\n"
        "print(m.packages_distributions()['aio_client'])\n"
        "print(aio_client.__file__)\n"
        "print(m.distribution('aio-client-resilient').entry_points['aio-client'].value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "PYTHONPATH": str(target)},
        cwd=tmp_path,
    )
    mapped, module, script = out.stdout.splitlines()
    assert mapped == "['aio-client-resilient']"
    assert Path(module).is_relative_to(target)
    assert script == "aio_client.__main__:main"
