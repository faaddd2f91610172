"""`make cluster`: the system on hosts of its own on this machine, to watch a failover.

Three Redis nodes (a primary, two replicas), three Sentinels, the API with Flower, and worker
hosts, each a network namespace with its own address (inference/cluster/topology.py; needs
root). A live table shows who is primary; kill it (the command is printed) and watch a replica
take over while the API keeps answering. Ctrl-C stops everything and removes the namespaces.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import requests
from rich.console import Console
from rich.live import Live
from rich.table import Table

from inference.cluster import topology
from inference.cluster.network import can_make_namespaces
from inference.cluster.topology import Cluster


def view(cluster: Cluster) -> Table:
    table = Table(title="make cluster (Ctrl-C stops it)")
    for column in ("host", "address", "runs", "state"):
        table.add_column(column)
    try:
        primary = cluster.primary().name
    except (StopIteration, requests.RequestException, OSError):
        primary = "?"
    for host in cluster.redis_hosts:
        proc = cluster.procs.procs.get(host.name)
        alive = proc is not None and proc.poll() is None
        role = "primary" if host.name == primary else "replica"
        table.add_row(host.name, host.address, "Valkey", f"{role}, pid {proc.pid}" if alive and proc else "down")
    for host in cluster.sentinel_hosts:
        table.add_row(host.name, host.address, "Sentinel", "")
    try:
        workers = requests.get(f"{cluster.api}/workers/status", timeout=2).json()["workers"]
    except (requests.RequestException, ValueError):
        workers = []
    table.add_row("api", cluster.network.hosts["api"].address, "API, Flower, callbacks", f"{cluster.api}  {cluster.flower}")
    for host in cluster.worker_hosts:
        mine = [f"{w['worker_id']}: {w['status']}" for w in workers if w["worker_id"].endswith(f"@{host.name}")]
        table.add_row(host.name, host.address, "workers", ", ".join(mine) or "starting")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker-hosts", type=int, default=2)
    parser.add_argument("--models", default="squeezenet", help="comma-separated: one worker per model on each worker host")
    args = parser.parse_args(argv)
    if reason := can_make_namespaces():
        sys.exit(f"make cluster: {reason}")
    console = Console()
    with console.status("starting 3 Redis nodes, 3 Sentinels, the API and Flower, the worker hosts..."):
        cluster = topology.start(worker_hosts=args.worker_hosts, models=tuple(args.models.split(",")), flower=True, callbacks=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        console.print(f"API {cluster.api}   Flower {cluster.flower} (login {topology.FLOWER_USER}:{cluster.password})")
        console.print(f"clients: REDIS_SENTINELS={cluster.env['REDIS_SENTINELS']} REDIS_MASTER_NAME={topology.MASTER} "
                      f"REDIS_URL=redis://:{cluster.password}@unused:6379/0  (the Sentinels name the host)")
        console.print("fail over: `kill -9 <the primary's pid>` (below) and watch a replica take over")
        console.print(f"logs: {cluster.procs.log_dir}")
        with Live(view(cluster), console=console, refresh_per_second=1) as live:
            while True:
                time.sleep(1)
                live.update(view(cluster))
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping, removing the namespaces"):
            cluster.close()


if __name__ == "__main__":
    main()
