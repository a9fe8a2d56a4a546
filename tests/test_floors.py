"""scripts/floors.txt pins every dependency at exactly the floor pyproject.toml declares."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
#: Extras that gather other extras or serve development; users install the rest.
NOT_RUNTIME = {"all", "test", "bench"}
#: Packages we do not depend on ourselves that scripts/floors.txt may pin anyway, because
#: the floors run needs them older than the newest its pins allow; each says why.
TRANSITIVE_PINS = {
    # Uvicorn 0.30 imports websockets.legacy (deprecated by websockets 14) and Sanic 24.x
    # websockets.connection (deprecated since 11): warnings the suite turns into errors.
    "websockets",
}


def _requirements(*, runtime: bool) -> dict[str, Requirement]:
    """By name: the dependencies and user extras, or else the test extra."""
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    if runtime:
        groups = [project["dependencies"]]
        groups += [group for name, group in extras.items() if name not in NOT_RUNTIME]
    else:
        groups = [extras["test"]]
    found: dict[str, Requirement] = {}
    for line in (line for group in groups for line in group):
        requirement = Requirement(line)
        found[canonicalize_name(requirement.name)] = requirement
    found.pop(canonicalize_name(project["name"]), None)  # aio-client[all] and the like
    return found


def _floor(requirement: Requirement) -> Version:
    """The version after ``>=``; there must be exactly one."""
    (lower,) = [spec for spec in requirement.specifier if spec.operator == ">="]
    return Version(lower.version)


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "scripts" / "floors.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_floors_pin_every_runtime_dependency_at_its_floor() -> None:
    """Each dependency and user extra's package has a >= floor, pinned at that version."""
    declared = {name: _floor(req) for name, req in _requirements(runtime=True).items()}
    pins = _pins()
    assert {name: pins.get(name) for name in declared} == declared


def test_other_pins_are_test_extra_floors() -> None:
    """A pin that is no runtime dependency nor transitive is the floor of a test package."""
    runtime = _requirements(runtime=True)
    test = _requirements(runtime=False)
    others = {
        name: version
        for name, version in _pins().items()
        if name not in runtime and name not in TRANSITIVE_PINS
    }
    assert others == {name: _floor(test[name]) if name in test else None for name in others}


def test_transitive_pins_are_pinned_and_not_our_dependencies() -> None:
    """Each allowed transitive pin is in floors.txt, and is no package we declare a floor for."""
    declared = _requirements(runtime=True).keys() | _requirements(runtime=False).keys()
    assert TRANSITIVE_PINS.issubset(_pins())
    assert not TRANSITIVE_PINS & declared


def test_test_extra_repeats_runtime_floors_unchanged() -> None:
    """A pinned package the test extra lists again declares the pinned floor there too."""
    pins = _pins()
    repeated = {name: req for name, req in _requirements(runtime=False).items() if name in pins}
    assert {name: _floor(req) for name, req in repeated.items()} == {
        name: pins[name] for name in repeated
    }


def test_opentelemetry_sdk_is_pinned_at_the_api_floor() -> None:
    """The SDK the tests use is pinned with the API at one version: they are released together."""
    pins = _pins()
    assert pins["opentelemetry-sdk"] == pins["opentelemetry-api"]
