# Weft. Every target runs on a fresh Linux machine as root; run `make help`.
SHELL := /bin/bash
export GOTOOLCHAIN := auto
export GOFLAGS := -buildvcs=false
ROOT := $(CURDIR)
CACHE := $(ROOT)/.cache
BIN := $(CACHE)/bin
TOOLS := $(CACHE)/tools
K8S_BIN := $(CACHE)/k8s/bin
# helm renders and lints manifests/chart. Not a go.mod tool: it would add hundreds of
# modules to Weft's build; `go install pkg@version` is as reproducible from the proxy.
HELM_VERSION := v4.3.2
HELM := $(TOOLS)/helm
export PATH := $(BIN):$(K8S_BIN):$(TOOLS):$(PATH)

.PHONY: help build images generate lint helm test lab-binaries cni-plugins lab-up lab-down lab-install demo bench bench-scale tools conformance

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build weft-controller, weft-agent, weftctl, weft-lab, weft-images and weft-echo into .cache/bin
	@mkdir -p $(BIN)
	go build -o $(BIN)/ ./cmd/... ./test/echo/cmd/weft-echo

TAG ?= dev
REGISTRY ?=
images: ## build the OCI images (multi-arch index) into .cache/images; REGISTRY=host/path pushes them
	go run ./cmd/weft-images build -out $(CACHE)/images/oci -tag $(TAG)
	$(if $(REGISTRY),go run ./cmd/weft-images push -layout $(CACHE)/images/oci -registry $(REGISTRY) -tag $(TAG))

tools: helm ## install the pinned code generators and helm into .cache/tools
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) go install tool

# A helm built by go install prints only "v4.3" as its version: the module version
# comes from the binary's build info.
helm: ## install the pinned helm into .cache/tools (once; a cold build takes minutes)
	@mkdir -p $(TOOLS)
	@if [ "$$(go version -m $(HELM) 2>/dev/null | awk '$$1 == "mod" && $$2 == "helm.sh/helm/v4" {print $$3}')" != "$(HELM_VERSION)" ]; then \
	  echo "GOBIN=$(TOOLS) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION)"; \
	  GOBIN=$(TOOLS) go install helm.sh/helm/v4/cmd/helm@$(HELM_VERSION); \
	fi

generate: tools ## regenerate every generated file (protobuf, BPF objects, CRDs, manifests/ from the chart)
	@bash test/deps.sh generate
	cd api && protoc -I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. weft/v1/*.proto
	cd test/echo && protoc -I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. echopb/echo.proto
	cd test/echo/basicpb && protoc -I. --go_out=paths=source_relative:. --go-grpc_out=paths=source_relative:. grpcecho.proto && m='Mgrpcecho.proto=sigs.k8s.io/gateway-api-conformance-images/echo-basic/grpcechoserver;grpcechoserver' out=../../conformance/images/echo-basic/grpcechoserver && protoc -I. --go_opt=$$m --go-grpc_opt=$$m --go_out=paths=source_relative:$$out --go-grpc_out=paths=source_relative:$$out grpcecho.proto
	@if [ -f bpf/gen.sh ]; then bash bpf/gen.sh; fi
	@if [ -f manifests/gen.sh ]; then bash manifests/gen.sh; fi

lint: helm ## gofmt, go vet, staticcheck (pinned in go.mod's tool block), helm lint of the chart
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go tool staticcheck ./...
	go tool staticcheck -tags weft_insecure ./cmd/weft-agent
	$(HELM) lint --strict -n weft-system manifests/chart

# The lab nodes' primary CNI: the upstream reference plugins, built from the Go
# module proxy like helm (go install pkg@version: reproducible, outside go.mod).
CNI_PLUGINS_VERSION := v1.10.0
CNI_BIN := $(CACHE)/cni/bin
cni-plugins: ## build the reference CNI plugins the lab nodes use (ptp, host-local) into .cache/cni/bin (once)
	@mkdir -p $(CNI_BIN)
	@for p in main/ptp ipam/host-local; do b=$(CNI_BIN)/$$(basename $$p); \
	  if [ "$$(go version -m $$b 2>/dev/null | awk '$$1 == "mod" {print $$3}')" != "$(CNI_PLUGINS_VERSION)" ]; then \
	    echo "GOBIN=$(CNI_BIN) go install github.com/containernetworking/plugins/plugins/$$p@$(CNI_PLUGINS_VERSION)"; \
	    GOBIN=$(CNI_BIN) go install github.com/containernetworking/plugins/plugins/$$p@$(CNI_PLUGINS_VERSION) || exit 1; \
	  fi; done

lab-binaries: ## build etcd, kube-apiserver, controllers, kube-proxy, kubectl, coredns into .cache/k8s (once)
	bash test/lab/k8s/build.sh

test: lint build lab-binaries cni-plugins ## run everything CI runs: unit, integration, privileged, end-to-end
	@bash test/deps.sh test
	@mkdir -p $(CACHE)
	@# The end-to-end suites (lab + real traffic, zero-failure goals) run after the other
	@# packages, not beside them: on 2 cores a parallel integration test slowed the agent
	@# restart under test enough to change what it measured.
	@# A run that fails before it tests (a go.mod to tidy, a build error) leaves no
	@# test events for the summary to count: its exit status fails the target too.
	@# The node proxy's suite runs once more with a goroutine per connection: the agent's
	@# default serves HTTP/1.1 clients in event loops, --outbound-loops=0 does not.
	rc=0; \
	  go test -json -count=1 -timeout 40m $$(go list ./... | grep -v '/test/e2e$$') > $(CACHE)/test.json || rc=1; \
	  go test -json -count=1 -timeout 10m ./agent/proxy -args -outbound-loops=0 >> $(CACHE)/test.json || rc=1; \
	  go test -json -count=1 -timeout 40m ./test/e2e >> $(CACHE)/test.json || rc=1; \
	  (cd test/conformance && go test -json -count=1 -timeout 40m ./...) >> $(CACHE)/test.json || rc=1; \
	  go run ./test/summary -require-privileged < $(CACHE)/test.json || exit 1; \
	  if [ $$rc != 0 ]; then echo "make test: a go test run failed outside its tests (see its errors above)"; exit 1; fi

lab-up: build lab-binaries cni-plugins ## start a local lab cluster (2 nodes); KUBECONFIG=.cache/lab/kubeconfig
	@bash test/deps.sh lab
	$(BIN)/weft-lab up

lab-down: ## stop the lab and remove everything it created
	$(BIN)/weft-lab down

# The lab runs the images users run: lab-install pushes them (from `make images`) into
# the lab's registry and installs the chart with image.registry pointing there.
# INSTALL=kustomize installs manifests/ with a kustomize images: entry instead.
INSTALL ?= helm
lab-install: build images helm ## push the images into the lab registry and install weft with Helm from them; wait until Ready
	$(BIN)/weft-lab install --method $(INSTALL) --tag $(TAG)

demo: lab-up lab-install ## the lab, weft installed from its images with Helm, a canary with real traffic
	bash test/demo/demo.sh

# The suite takes the lab suite lock itself (test/lab/labtest): it uses a running
# lab and leaves it running, or brings one up and takes it down. Upstream flags go in
# CONFORMANCE_ARGS, e.g. CONFORMANCE_ARGS=-run-test=MeshPorts or -run-test=HTTPRouteWeight.
CONFORMANCE_ARGS ?=
conformance: build lab-binaries cni-plugins ## run the upstream Gateway API conformance suite (GATEWAY-HTTP/TLS/GRPC/TCP, MESH-HTTP/GRPC) on the lab (report: .cache/conformance/report.yaml) and measure route propagation
	@bash test/deps.sh lab
	@mkdir -p $(CACHE)/conformance
	cd test/conformance && go test -count=1 -timeout 40m -v . -args $(CONFORMANCE_ARGS) 2>&1 | tee $(CACHE)/conformance/run.log; exit $${PIPESTATUS[0]}
	@echo "conformance report: $(CACHE)/conformance/report.yaml (log: $(CACHE)/conformance/run.log)"

bench: build ## run the benchmarks against their peers (ratios)
	@bash test/deps.sh bench
	@if [ -f test/bench/run.sh ]; then bash test/bench/run.sh; else go test -run '^$$' -bench . -benchmem ./...; fi

# The control plane at the issue's scale (#17): a fresh apiserver (envtest, on
# the lab's binaries; not the lab), the real controller, one simulated agent
# per node. WEFT_SCALE_SIZE=small for a quick run; WEFT_SCALE_AUTHZ=1 adds an
# AuthorizationPolicy per Service and a phase of policy changes. Prints a table
# and a final "scale ..." line.
bench-scale: lab-binaries ## control-plane scale benchmark: 10k Services, 100k endpoints, 20k routes, 1,000 simulated agents
	@# a kube-apiserver over 140k objects can need minutes to start on 2 busy cores; the cold load alone is about 15-28 min
	KUBEBUILDER_CONTROLPLANE_START_TIMEOUT=$${KUBEBUILDER_CONTROLPLANE_START_TIMEOUT:-300s} go test -count=1 -timeout 60m -run '^$$' -bench '^BenchmarkScale$$' -benchtime 1x ./test/bench/scale/
