"""``python -m tests.servers KIND``: start one server, print its endpoint as JSON
on one line, run until stdin closes, then stop it.

Exit status 2 with the reason on stderr when the server cannot start.
"""

from __future__ import annotations

import json
import sys

from . import KINDS, ServerStartError, make_server


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in KINDS:
        print(f"usage: python -m tests.servers {{{','.join(sorted(KINDS))}}}", file=sys.stderr)
        return 64
    server = make_server(argv[0])
    try:
        endpoint = server.start()
    except ServerStartError as exc:
        print(f"tests.servers: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(endpoint.to_json()), flush=True)
        while sys.stdin.read(65536):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
