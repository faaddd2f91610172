"""Many hosts on one machine: Redis with replicas and Sentinels, the API and workers, each in a network namespace of its own (`make cluster`, `make scale-out`)."""
