#!/usr/bin/env bash
# The HTTP benchmark alone: `bench/http.sh [plain] [fwd] [jwt]` is the same
# as `bench/run.sh http [plain] [fwd] [jwt]`, which see
# (bench/workloads/http.sh holds the workload; `bench/http.sh --help` lists
# its settings).
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" http "$@"
