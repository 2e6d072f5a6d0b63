#!/usr/bin/env bash
# The UDP DNS benchmark alone: the same as `bench/run.sh udp`, which see
# (bench/workloads/udp.sh holds the workload; `bench/udp.sh --help` lists
# its settings).
exec "$(dirname "${BASH_SOURCE[0]}")/run.sh" udp "$@"
