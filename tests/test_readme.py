"""Every Python block in README.md runs as written and passes ``mypy --strict``."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import anyio
import pytest
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.fixture
async def users_service() -> AsyncIterator[str]:
    """A users service on 127.0.0.1 for the quick start to call."""

    async def user(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "id": int(request.match_info["id"]),
                "fields": request.query.get("fields"),
                "priority": request.headers.get("X-Request-Priority"),
            }
        )

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_readme_has_blocks() -> None:
    """The README's examples are found (so the tests below test something), the testing
    kit's complete pytest example among them."""
    assert len(BLOCKS) >= 5
    assert sum(_is_test_module(block) for block in BLOCKS) == 1


def _is_test_module(block: str) -> bool:
    return "import pytest" in block and re.search(r"^(async )?def test_", block, re.M) is not None


# A test module (the "Testing your code" block) runs under pytest, as its readers run it.
# looptime, once a test dependency of this project (and still in environments made then),
# installs pytest plugins that fail without pytest-asyncio; the project's configuration turns
# them off, and so must this run, which reads no configuration.
_PYTEST = [
    "-m", "pytest", "-q", "-W", "error", "-p", "no:cacheprovider", "-p", "no:looptime_plugin",
    "-p", "no:looptime_chronometers", "-p", "no:looptime_timeproxies",
]  # fmt: skip


@pytest.mark.parametrize("index", range(len(BLOCKS)))
async def test_readme_block_runs(index: int, users_service: str, tmp_path: Path) -> None:
    """Block ``index`` runs under ``-W error``, exits 0 and writes nothing to stderr (a
    block that is a test module runs under pytest, and its tests pass)."""
    test_module = _is_test_module(BLOCKS[index])
    script = tmp_path / (f"test_block_{index}.py" if test_module else f"block_{index}.py")
    script.write_text(BLOCKS[index], encoding="utf-8")
    result = await anyio.run_process(
        [sys.executable, *(_PYTEST if test_module else ["-W", "error"]), str(script)],
        env={**os.environ, "USERS_URL": users_service},
        cwd=tmp_path,
        check=False,
    )
    if test_module:
        tests = len(re.findall(r"^(?:async )?def test_", BLOCKS[index], re.M))
        assert f"{tests} passed" in result.stdout.decode(), result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    if "USERS_URL" in BLOCKS[index]:
        printed = result.stdout.decode().strip().replace("'", '"').replace("None", "null")
        assert json.loads(printed) == {"id": 42, "fields": "name", "priority": "high"}


def _at_the_floors() -> bool:
    """Whether every pin of scripts/floors.txt is what is installed: the floors run."""
    lines = (ROOT / "scripts" / "floors.txt").read_text(encoding="utf-8").splitlines()
    pins = [line.split("==") for line in lines if line.strip()[:1] not in ("", "#")]
    return all(version(name.strip()) == pinned.strip() for name, pinned in pins)


async def test_readme_blocks_pass_mypy_strict(tmp_path: Path) -> None:
    """Every block type-checks under ``mypy --strict`` with the project's configuration, as
    users copying them into a strictly typed service would check them."""
    if _at_the_floors():
        # As scripts/test's own mypy step, types are checked against the newest
        # dependencies: older stubs differ (aiohttp 3.11 mistypes app.on_shutdown.append).
        pytest.skip("types are checked against the newest dependencies, not the floors")
    files = []
    for index, block in enumerate(BLOCKS):
        # One package per block: blocks may define the same names.
        package = tmp_path / f"readme_block_{index}"
        package.mkdir()
        (package / "__init__.py").write_text("", encoding="utf-8")
        (package / "block.py").write_text(block, encoding="utf-8")
        files.append(str(package / "block.py"))
    result = await anyio.run_process(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--no-error-summary", *files],
        cwd=ROOT,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# Serves the metrics block's ``app`` on 127.0.0.1 and asks for /metrics as Prometheus would.
_SCRAPE = """

async def _scrape() -> None:
    import asyncio

    import aiohttp
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/metrics"
        async with session.get(url, allow_redirects=False) as resp:
            print(resp.status, resp.headers["Content-Type"])
            print(await resp.text())
    server.should_exit = True
    await serving
    await client.aclose()


import asyncio as _asyncio

_asyncio.run(_scrape())
"""


async def test_readme_metrics_route_answers_200(tmp_path: Path) -> None:
    """The README's FastAPI service answers ``GET /metrics`` with 200 and the Prometheus text
    (a mounted app would answer 307, a redirect to ``/metrics/``)."""
    (block,) = [block for block in BLOCKS if "generate_latest" in block]
    script = tmp_path / "metrics_block.py"
    script.write_text(block + _SCRAPE, encoding="utf-8")
    result = await anyio.run_process([sys.executable, "-W", "error", str(script)], check=False)
    assert result.returncode == 0, result.stderr.decode()
    status, page = result.stdout.decode().split("\n", 1)
    assert status.startswith("200 text/plain")
    assert "# TYPE aio_client_server_requests_total counter" in page
