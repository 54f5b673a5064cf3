# Developer commands for sipwake. CI runs `make test` (see .ci/run).
#
#   make build   build ./sipwake with the version and commit stamped in
#   make test    install missing test peers (as root), go vet, go test -race,
#                then the Helm chart tests (deploy/helm/test, a module of its
#                own) and image-check
#   make bench   Go benchmarks of the SIP hot path, then SIPp load through
#                sipwake and through Kamailio side by side (bench-sipp alone);
#                bench-onbehalf: on-behalf accounts one node keeps registered
#   make fmt     gofmt the tree
#   make lint    fail on unformatted files, then go vet
#   make image-check  build the container's static binary (flags read from
#                deploy/docker/Dockerfile) and run it as uid 65532 from an
#                empty directory: no Docker engine needed
#   make manifests  regenerate deploy/kubernetes (the chart rendered with its
#                defaults) and the config part of the chart's values.schema.json

SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Real SIP peers the end-to-end tests start (on 127.0.0.1, random ports):
# the binaries looked for (on PATH or in /usr/sbin, where Debian puts
# kamailio), and the Debian packages that provide them (xz unpacks the
# PROTOS test material).
PEER_BINS := kamailio kamcmd sipp baresip linphone-daemon redis-server xz
PEER_PKGS := kamailio kamailio-extra-modules kamailio-tls-modules kamailio-utils-modules \
             sip-tester baresip linphone-cli redis-server openssl netcat-openbsd xz-utils

.PHONY: build test peers vet lint fmt bench bench-sipp bench-onbehalf image-check chart-test manifests clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o sipwake ./cmd/sipwake

# Missing peers fail the tests instead of skipping them: SIPWAKE_REQUIRE_PEERS=1
# (and CI, unless already set) are exported to go test.
test: peers vet
	CI=$${CI:-1} SIPWAKE_REQUIRE_PEERS=1 $(GO) test -race -count=1 -timeout 40m ./...
	$(MAKE) --no-print-directory chart-test image-check

# The Helm chart: lint and render it with Helm's Go packages, decode every
# object strictly into the Kubernetes API types, run sipwake validate on the
# rendered config, and check deploy/kubernetes and values.schema.json are
# current. A separate module, so the main go.mod gains no Helm or Kubernetes
# dependencies.
chart-test:
	cd deploy/helm/test && GO='$(GO)' $(GO) test -count=1 -timeout 20m ./...

# Regenerates deploy/kubernetes and the config part of
# deploy/helm/sipwake/values.schema.json (chart-test fails when they are stale).
manifests:
	cd deploy/helm/test && $(GO) run ./cmd/generate

# Installs the peers with apt when one is missing and we are root; otherwise
# prints the command and fails.
peers:
	@have() { command -v "$$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$$1" ]; }; \
	missing=(); \
	for b in $(PEER_BINS); do have "$$b" || missing+=("$$b"); done; \
	compgen -G '/usr/lib/*/kamailio/modules/tls.so' >/dev/null || missing+=("kamailio tls module"); \
	if [ $${#missing[@]} -eq 0 ]; then echo "test peers present: $(PEER_BINS)"; exit 0; fi; \
	echo "missing test peers: $${missing[*]}"; \
	if [ "$$(id -u)" -ne 0 ]; then \
		echo "install them as root, then run make test again:"; \
		echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(PEER_PKGS)"; \
		exit 1; \
	fi; \
	apt-get update; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(PEER_PKGS); \
	for b in $(PEER_BINS); do have "$$b" || { echo "still missing after apt-get: $$b"; exit 1; }; done

vet:
	$(GO) vet ./...

fmt:
	$(GO) fmt ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Go micro-benchmarks of the hot path (parse -> chain -> forward), then the
# SIPp load comparison with Kamailio (cmd/sipwake/internal/bench, about 20
# minutes, needs sipp, kamailio and redis-server). Numbers depend on the
# machine: they go to stdout and bench-results/, none into the repository.
bench:
	@mkdir -p bench-results
	$(GO) test -run '^$$' -bench . -benchmem ./proxy/... ./registrar/... | tee bench-results/go-bench.txt
	SIPWAKE_BENCH_OUT=$(CURDIR)/bench-results $(GO) test -tags sipbench -run '^TestSIPpLoad$$' -count=1 -timeout 30m -v ./cmd/sipwake/internal/bench

# Only the SIPp load comparison; SIPWAKE_BENCH_ONLY=invite|register|register-uas and the
# other knobs in cmd/sipwake/internal/bench/doc.go narrow it further.
bench-sipp:
	@mkdir -p bench-results
	SIPWAKE_BENCH_OUT=$(CURDIR)/bench-results $(GO) test -tags sipbench -run '^TestSIPpLoad$$' -count=1 -timeout 30m -v ./cmd/sipwake/internal/bench

# On-behalf capacity: how many accounts one node keeps registered at a
# Kamailio granting 60 s, CPU and store operations per refresh
# (SIPWAKE_BENCH_ACCOUNTS, SIPWAKE_BENCH_AUTH=credentials|trusted,
# SIPWAKE_BENCH_SECONDS; needs kamailio and redis-server).
bench-onbehalf:
	$(GO) test -tags sipbench -run '^TestOnBehalfCapacity$$' -count=1 -timeout 30m -v ./cmd/sipwake

# The Dockerfile's go build must equal the build target above (same flags and
# ldflags, plus CGO_ENABLED=0); the script checks that, builds that binary,
# checks it is static and runs version, config default, validate and serve
# (probes, SIGTERM, exit 0) as uid/gid 65532 with setpriv.
image-check:
	GO='$(GO)' VERSION='$(VERSION)' COMMIT='$(COMMIT)' bash deploy/docker/image-check.sh

clean:
	rm -f sipwake
