GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/lbd-lb/lbd/pkg/version.Version=$(VERSION)

.PHONY: all build test test-short demo bench soak lint fmt clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/lbd ./cmd/lbd
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/lbctl ./cmd/lbctl

# The whole suite: vet, then every test with the race detector, then the
# allocation checks, which the race detector's own allocations would spoil.
test: lint
	$(GO) test -race -count=1 -timeout 12m ./...
	$(GO) test -count=1 -run 'NoAllocs' ./pkg/...

test-short:
	$(GO) test -short -count=1 ./...

demo: build
	./$(BIN)/lbd demo

bench: build
	./bench/run.sh

# A bounded run (10 minutes) of steady mixed traffic that samples lbd's
# memory, descriptors and goroutines; writes bench/results/soak.md and
# soak.svg, and fails when they are not flat after warm-up.
soak: build
	$(GO) run ./bench/soak -lbd $(BIN)/lbd -out bench/results

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
