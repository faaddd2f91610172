# The README's two commands: `make run` (the whole system) and `make test` (the test suite).
# Both create the virtualenv and install requirements first when needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup install reset docker-up docker-down run start stop logs test test-fast lint type-check resilience scale-out cluster benchmark benchmark-gpu load-test stress-test attack-report demo quick-demo weights models health monitor config-table manifests clean

setup: $(STAMP)

install: setup  ## the seed's name for setup: the virtualenv with everything in requirements.txt

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

run: setup  ## API, one worker per model, Flower, and an embedded Redis when REDIS_URL does not answer
	$(BIN)/python -m inference.worker.convert --missing  # a first start's models, converted in one process
	$(BIN)/honcho start

start: setup  ## the same in the background (log: var/log/system.log; `make stop`, `make logs`)
	mkdir -p var/log
	$(BIN)/python -m inference.worker.convert --missing
	nohup $(BIN)/honcho start > var/log/system.log 2>&1 & echo $$! > var/honcho.pid
	@echo "started (pid $$(cat var/honcho.pid)); API on :$${API_PORT:-8000}, Flower on :$${FLOWER_PORT:-5555}"

stop:  ## stop what `make start` started
	@if test -f var/honcho.pid; then kill -INT $$(cat var/honcho.pid); rm -f var/honcho.pid; echo stopped; else echo "not running (no var/honcho.pid)"; fi

logs:  ## follow the log of `make start`
	tail -f var/log/system.log

test: setup  ## the whole test suite: real Redis (embedded, own port), real workers, real models
	$(BIN)/python -m pytest

test-fast: setup  ## unit tests only (no workers)
	$(BIN)/python -m pytest -m "not e2e"

lint: setup  ## ruff, and no tracked file that .gitignore names (a wheel, a cache) in the repository
	$(BIN)/ruff check .
	@if git rev-parse --git-dir >/dev/null 2>&1 && [ -n "$$(git ls-files --cached --ignored --exclude-standard)" ]; then \
		echo "tracked files that .gitignore names (git rm --cached them):"; git ls-files --cached --ignored --exclude-standard; exit 1; fi

type-check: setup  ## mypy (settings in pyproject.toml)
	$(BIN)/mypy

resilience: setup  ## the fault-tolerance scenarios under more load (RESILIENCE_SCALE=5)
	RESILIENCE_SCALE=$${RESILIENCE_SCALE:-5} $(BIN)/python -m pytest tests/test_resilience.py -s -p no:cacheprovider

scale-out: setup  ## hosts in network namespaces (root): 3 failovers and a coordinated switch under load, a worker host lost, throughput with 1/2/4 worker hosts; tables, JSON in reports/
	$(BIN)/python -m tests.scale_out

cluster: setup  ## the system on hosts of its own (network namespaces, root): 3 Redis, 3 Sentinels, API + Flower + callbacks worker, worker hosts; watch a failover
	$(BIN)/python -m inference.cli.cluster

benchmark: setup  ## the system against plain scripts, same machine, same run: one worker tuned alone, then make run's own processes and memory; tables, JSON and PNGs in benchmark-results/
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.make_run --baseline 6edc619  # 12-MP photos also through the code before issue #20
	$(BIN)/python -m benchmarks.protocols --json benchmark-results/protocols.json  # /v1, the seed's /inference, /v2

benchmark-gpu: setup  ## the same on a CUDA machine: requests of 128 images, two worker replicas (the H100 figures in docs/performance.md)
	WORKER_FP16=true $(BIN)/python -m benchmarks --batch-sizes 64,128,256 --rounds 1 --requests 512 --low-load 20 \
	  --submissions 300 --images-per-request 128 --many-requests 128 --many-concurrency 16 --instances 2 --workers 2 --seconds 2 --api-workers 8

load-test: setup  ## 200 requests, 16 at a time, against the running system (`make run`); HTML report in reports/
	mkdir -p reports
	$(BIN)/python tests/load_test.py --url http://$${API_HOST:-127.0.0.1}:$${API_PORT:-8000} --requests 200 --concurrent 16 --report reports/load-test.html

stress-test: setup  ## 1000 requests in bursts of 100 every 0.5 s, 64 at a time
	mkdir -p reports
	$(BIN)/python tests/load_test.py --url http://$${API_HOST:-127.0.0.1}:$${API_PORT:-8000} --requests 1000 --concurrent 64 --burst-mode --burst-size 100 --burst-interval 0.5 --report reports/stress-test.html

attack-report: setup  ## hostile requests against the running system: each one's answer, the next ordinary request's time, worker and Redis memory
	mkdir -p reports
	$(BIN)/python -m tests.attack_report --url http://$${API_HOST:-127.0.0.1}:$${API_PORT:-8000} --json reports/attack-report.json

demo: setup  ## a guided tour of the running system (interactive)
	$(BIN)/python demo.py

quick-demo: setup  ## the same, unattended
	$(BIN)/python demo.py --quick

weights: setup  ## download the pretrained weights into TORCH_HOME (needs internet)
	$(BIN)/python -m inference.cli.weights download

models: setup  ## convert every model to OpenVINO in MODEL_CACHE_DIR now, in one process (`make run` converts those its workers lack)
	$(BIN)/python -m inference.worker.convert

health:  ## the running system's /health
	@curl -s http://$${API_HOST:-127.0.0.1}:$${API_PORT:-8000}/health | $(BIN)/python -m json.tool

monitor: setup  ## open Flower (started by `make run`) in a browser
	@echo "Flower: http://127.0.0.1:$${FLOWER_PORT:-5555}  (Prometheus metrics: /metrics there and on the API)"
	@echo "login: $${FLOWER_BASIC_AUTH:-$$(cat var/flower-credentials 2>/dev/null || echo 'made when Flower first starts, in var/flower-credentials')}"
	-@$(BIN)/python -m webbrowser -t "http://127.0.0.1:$${FLOWER_PORT:-5555}" >/dev/null 2>&1

config-table: setup  ## the configuration table of docs/configuration.md, generated from inference/core/settings.py
	@$(BIN)/python -c "from inference.core.settings import markdown_table; print(markdown_table())"

manifests: setup  ## deploy/: a Kubernetes Deployment and a KEDA ScaledObject per worker config (docs/operations.md#autoscaling)
	$(BIN)/python -m inference.cli.manifests

reset: stop  ## stop what `make start` started and forget its state: Redis's data, Flower's database, logs, converted models (var/)
	rm -rf var .pytest_cache

docker-up:  ## the system in containers (docker-compose.yml), in the background
	docker compose up -d --build

docker-down:  ## stop and remove those containers
	docker compose down

clean:
	rm -rf $(VENV) var .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
