"""Every Python block in README.md runs as written."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from aiohttp import web

README = Path(__file__).resolve().parent.parent / "README.md"
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
    """The README's examples are found (so the tests below test something)."""
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
async def test_readme_block_runs(index: int, users_service: str, tmp_path: Path) -> None:
    """Block ``index`` runs under ``-W error``, exits 0 and writes nothing to stderr."""
    script = tmp_path / f"block_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    result = await anyio.run_process(
        [sys.executable, "-W", "error", str(script)],
        env={**os.environ, "USERS_URL": users_service},
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    if "USERS_URL" in BLOCKS[index]:
        printed = result.stdout.decode().strip().replace("'", '"').replace("None", "null")
        assert json.loads(printed) == {"id": 42, "fields": "name", "priority": "high"}
