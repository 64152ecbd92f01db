"""``python -m simulations.ray_loopback start ...``: Ray's own ``ray`` command line with 127.0.0.1
kept as 127.0.0.1, for a Ray cluster of several nodes on one machine's loopback.

Ray 2.55's ``ray start`` rewrites a node or cluster address of 127.0.0.1 (or localhost) into the
machine's network address (`ray._private.services.resolve_ip_for_localhost`) unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and under that switch it refuses to start a worker node
("Multi-node Ray clusters are not supported on Windows and OSX"). A head node needs only the
switch; a second node on the same machine is started with this module, which turns that one
rewrite off, so the node's raylet, object manager and agents listen on 127.0.0.1 only::

    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address 127.0.0.1 --port 6390 --num-cpus 1
    python -m simulations.ray_loopback start --address 127.0.0.1:6390 --node-ip-address 127.0.0.1 \\
        --num-cpus 1 --temp-dir /tmp/ray-node2

Across machines use plain ``ray start`` with the machines' addresses. Stop with ``ray stop``
(every Ray of this user on this machine) or by PID.
"""

from __future__ import annotations

import sys
from typing import Optional

LOOPBACK = "127.0.0.1"


def main(argv: Optional[list[str]] = None) -> None:
    """Run ``ray <argv>`` with loopback addresses left on loopback (exits like ``ray`` does)."""
    import ray._private.services as services
    from ray.scripts.scripts import cli

    resolve = services.resolve_ip_for_localhost

    def keep_loopback(host: str) -> str:
        return LOOPBACK if host in (LOOPBACK, "localhost") else resolve(host)

    services.resolve_ip_for_localhost = keep_loopback  # read at call time by `ray start`
    cli.main(args=sys.argv[1:] if argv is None else argv, prog_name="ray")


if __name__ == "__main__":
    main()
