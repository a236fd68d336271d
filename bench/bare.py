"""The reference server: bare Starlette answering the same JWKS bytes, same uvicorn settings.

python -m bench.bare PORT FILE
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def main() -> None:
    port, path = int(sys.argv[1]), Path(sys.argv[2])
    body = path.read_bytes()

    async def jwks(request: Request) -> Response:
        return Response(body, media_type="application/json")

    app = Starlette(routes=[Route("/.well-known/jwks.json", jwks)])
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
