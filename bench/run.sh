#!/usr/bin/env bash
# Layer-4 TCP benchmarks: lbd against HAProxy and the nginx stream module,
# with the no-proxy path as a baseline. `make bench` runs this script.
#
# Usage: bench/run.sh [bulk] [conn] [rr] [idle] [udp] [http]   (default: all six)
#
#   bulk  iperf3 through the proxy, one stream and eight streams (Gbit/s)
#   conn  wrk with "Connection: close", 32 connections (connections/s)
#   rr    wrk keep-alive, 64 connections (requests/s, p50, p99)
#   idle  RSS growth of the proxy per idle connection, 4000 connections,
#         and the proxy's CPU while it holds them
#   udp   DNS over UDP, dnsperf -> dnsmasq, HAProxy has no UDP (queries/s,
#         lost, latency): bench/udp.sh, run after the TCP workloads, writes
#         udp.md and udp.png; `bench/udp.sh --help` lists its own settings
#   http  layer-7 HTTP, wrk keep-alive, 64 connections, three nginx backend
#         ports, plain routing and HS256 JWT (requests/s, p50, p99):
#         bench/http.sh, run last, writes http.md and http.png;
#         `bench/http.sh --help` lists its own settings
#
# Environment (defaults in brackets):
#   SYSTEMS      systems to compare, in run order ["direct haproxy nginx lbd"]
#   ROUNDS       rounds per measurement; the table shows the median [3]
#   DURATION     seconds per load, sets both of the next two
#   BULK_SECS    iperf3 duration [5]
#   WRK_SECS     wrk duration [8]
#   WRK_THREADS  wrk threads [1]
#   IDLE_CONNS   connections held by the idle workload [4000]
#   IDLE_CPU_SECS seconds over which the proxy's CPU is measured while it
#                holds them, doing nothing else [10]
#   COOLDOWN     seconds of rest between measurements [2]
#   PORT_BASE    first of the 127.0.0.1 ports used, PORT_BASE+1..+33; udp
#                uses +4, +24 and +34; http +5..+7, +15, +16, +25, +35, +36 [19200]
#   LBD          lbd binary [./bin/lbd]
#   RESULTS_DIR  where tcp.md and tcp.png go [bench/results]
#   NO_INSTALL=1 never run apt-get
#
# Every proxy runs alone on CPU 1; clients and backends run on CPU 0. Traffic
# stays on 127.0.0.1, every load stops by itself, and everything started here
# is stopped on exit. Raw outputs go to bench/work/<timestamp>/.
set -Eeuo pipefail
trap 'log "ERROR: status $? at line $LINENO: $BASH_COMMAND"' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SYSTEMS=${SYSTEMS:-"direct haproxy nginx lbd"}
ROUNDS=${ROUNDS:-3}
BULK_SECS=${BULK_SECS:-${DURATION:-5}}
WRK_SECS=${WRK_SECS:-${DURATION:-8}}
WRK_THREADS=${WRK_THREADS:-1}
IDLE_CONNS=${IDLE_CONNS:-4000}
IDLE_CPU_SECS=${IDLE_CPU_SECS:-10}
COOLDOWN=${COOLDOWN:-2}
PORT_BASE=${PORT_BASE:-19200}
LBD=${LBD:-./bin/lbd}
RESULTS_DIR=${RESULTS_DIR:-bench/results}
NO_INSTALL=${NO_INSTALL:-0}

PROXY_CPU=1
CLIENT_CPU=0

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
NOTES=()

# ---------------------------------------------------------------- arguments

WORKLOADS=()
RUN_UDP=0
RUN_HTTP=0
for arg in "$@"; do
	case $arg in
	bulk | conn | rr | idle) WORKLOADS+=("$arg") ;;
	udp) RUN_UDP=1 ;;
	http) RUN_HTTP=1 ;;
	all)
		WORKLOADS+=(bulk conn rr idle)
		RUN_UDP=1
		RUN_HTTP=1
		;;
	-h | --help)
		sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown workload '$arg' (expected: bulk conn rr idle udp http)" ;;
	esac
done
if [[ $# == 0 ]]; then
	WORKLOADS=(bulk conn rr idle)
	RUN_UDP=1
	RUN_HTTP=1
fi
# udp and/or http alone: bench/udp.sh and bench/http.sh do everything themselves.
if [[ ${#WORKLOADS[@]} == 0 ]]; then
	mkdir -p "$ROOT/bench/work"
	exec 9>"$ROOT/bench/work/.lock"
	flock -n 9 || { printf '[bench] ERROR: another bench run is going on (bench/work/.lock)\n' >&2; exit 1; }
	rc=0
	[[ $RUN_UDP == 1 ]] && { LBD_BENCH_LOCKED=1 "$ROOT/bench/udp.sh" || rc=$?; }
	[[ $RUN_HTTP == 1 ]] && { LBD_BENCH_LOCKED=1 "$ROOT/bench/http.sh" || rc=$?; }
	exit "$rc"
fi

read -r -a SYS_LIST <<<"$SYSTEMS"
for s in "${SYS_LIST[@]}"; do
	case $s in
	direct | haproxy | nginx | lbd) ;;
	*) die "unknown system '$s' in SYSTEMS (expected: direct haproxy nginx lbd)" ;;
	esac
done
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "SYSTEMS is empty"
for v in ROUNDS BULK_SECS WRK_SECS WRK_THREADS IDLE_CONNS COOLDOWN PORT_BASE; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 || ($v == COOLDOWN && ${!v} == 0) ]] ||
		die "$v must be a positive integer, got '${!v}'"
done

has_workload() {
	local w
	for w in "${WORKLOADS[@]}"; do [[ $w == "$1" ]] && return 0; done
	return 1
}
# -------------------------------------------------------------------- setup

[[ $(nproc --all) -ge 2 ]] || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, load on CPU $CLIENT_CPU)"

mkdir -p bench/work
exec 9>bench/work/.lock
flock -n 9 || die "another bench/run.sh is running (bench/work/.lock)"

STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$ROOT/bench/work/$STAMP
mkdir -p "$WORK/raw" "$WORK/conf"
ln -sfn "$STAMP" bench/work/latest
TMP=$(mktemp -d /tmp/lbd-bench.XXXXXX)

# --------------------------------------------------------- process handling

STARTED=()
LAST_PID=

trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------- installation

install_missing() {
	local pkgs=()
	command -v iperf3 >/dev/null || pkgs+=(iperf3)
	command -v wrk >/dev/null || pkgs+=(wrk)
	command -v nginx >/dev/null || pkgs+=(nginx)
	if has_system nginx && ! { command -v nginx >/dev/null && nginx_has_stream; }; then
		pkgs+=(libnginx-mod-stream)
	fi
	has_system haproxy && ! command -v haproxy >/dev/null && pkgs+=(haproxy)
	command -v gnuplot >/dev/null || pkgs+=(gnuplot-nox)
	command -v jq >/dev/null || pkgs+=(jq)
	command -v taskset >/dev/null || pkgs+=(util-linux)
	command -v ss >/dev/null || pkgs+=(iproute2)
	apt_install "${pkgs[@]}"
}

install_missing
for t in iperf3 wrk nginx jq taskset ss go; do
	command -v "$t" >/dev/null || die "$t not found"
done
if has_system haproxy && ! command -v haproxy >/dev/null; then die "haproxy not found"; fi
if has_system nginx && ! nginx_has_stream; then die "nginx has no stream module (apt-get install libnginx-mod-stream)"; fi

# -------------------------------------------------------------------- ports

B_IPERF=$((PORT_BASE + 1))
B_HTTP=$((PORT_BASE + 2))
B_IDLE=$((PORT_BASE + 3))

sys_base() {
	case $1 in
	haproxy) echo $((PORT_BASE + 10)) ;;
	nginx) echo $((PORT_BASE + 20)) ;;
	lbd) echo $((PORT_BASE + 30)) ;;
	esac
}

# front_port SYSTEM bulk|http|idle: the port a client dials for that system.
front_port() {
	local off
	case $2 in bulk) off=1 ;; http) off=2 ;; idle) off=3 ;; esac
	if [[ $1 == direct ]]; then
		echo $((PORT_BASE + off))
	else
		echo $(($(sys_base "$1") + off))
	fi
}

check_ports_free() {
	local p s busy=()
	for p in "$B_IPERF" "$B_HTTP" "$B_IDLE"; do listening "$p" && busy+=("$p"); done
	for s in "${SYS_LIST[@]}"; do
		[[ $s == direct ]] && continue
		for p in bulk http idle; do
			p=$(front_port "$s" "$p")
			listening "$p" && busy+=("$p")
		done
	done
	if [[ ${#busy[@]} -gt 0 ]]; then
		ss -Hltnp | grep -E ":($(
			IFS='|'
			echo "${busy[*]}"
		))\b" >&2 || true
		die "ports already in use: ${busy[*]}; set PORT_BASE to a free range"
	fi
}
check_ports_free

# ------------------------------------------------------------------ configs

write_haproxy_conf() {
	local f=$WORK/conf/haproxy.cfg
	cat >"$f" <<EOF
global
    nbthread 1
    maxconn 7800
    pidfile $TMP/haproxy.pid

defaults
    mode tcp
    option splice-auto
    maxconn 7800
    timeout connect 5s
    timeout client 10m
    timeout server 10m

listen bulk
    bind 127.0.0.1:$(front_port haproxy bulk)
    server s1 127.0.0.1:$B_IPERF

listen http
    bind 127.0.0.1:$(front_port haproxy http)
    server s1 127.0.0.1:$B_HTTP

listen idle
    bind 127.0.0.1:$(front_port haproxy idle)
    server s1 127.0.0.1:$B_IDLE
EOF
}

write_nginx_stream_conf() {
	local d=$WORK/nginx-stream mod=""
	mkdir -p "$d/logs"
	if m=$(stream_module); then mod="load_module $m;"; fi
	cat >"$WORK/conf/nginx-stream.conf" <<EOF
$mod
worker_processes 1;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;

events {
    worker_connections 20000;
}

stream {
    server {
        listen 127.0.0.1:$(front_port nginx bulk);
        proxy_pass 127.0.0.1:$B_IPERF;
    }
    server {
        listen 127.0.0.1:$(front_port nginx http);
        proxy_pass 127.0.0.1:$B_HTTP;
    }
    server {
        listen 127.0.0.1:$(front_port nginx idle);
        proxy_pass 127.0.0.1:$B_IDLE;
    }
}
EOF
}

write_nginx_backend_conf() {
	local d=$WORK/nginx-backend
	mkdir -p "$d/logs"
	cat >"$WORK/conf/nginx-backend.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;

events {
    worker_connections 20000;
}

http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $d/client_body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    server {
        listen 127.0.0.1:$B_HTTP backlog=4096;
        location / {
            default_type text/plain;
            return 200 "ok";
        }
    }
}
EOF
}

write_lbd_conf() {
	local f=$WORK/conf/lbd.toml w port back
	cat >"$f" <<EOF
[global]
workers = 1
metrics_listen = ""
admin_socket = "$TMP/lbd-admin.sock"
log_level = "warn"
shutdown_timeout = "2s"
EOF
	for w in bulk http idle; do
		port=$(front_port lbd "$w")
		case $w in bulk) back=$B_IPERF ;; http) back=$B_HTTP ;; idle) back=$B_IDLE ;; esac
		cat >>"$f" <<EOF

[[listener]]
name = "$w"
bind = "127.0.0.1:$port"
protocol = "tcp"
pool = "$w"

[[pool]]
name = "$w"
algorithm = "wrr"

  [[pool.backend]]
  address = "127.0.0.1:$back"

  [pool.health_check]
  type = "none"
EOF
	done
}

write_haproxy_conf
write_nginx_stream_conf
write_nginx_backend_conf
write_lbd_conf

# ------------------------------------------------------------------ proxies

declare -A PROXY_CMD
PROXY_CMD[haproxy]="taskset -c $PROXY_CPU haproxy -f $WORK/conf/haproxy.cfg -db"
PROXY_CMD[nginx]="taskset -c $PROXY_CPU nginx -p $WORK/nginx-stream/ -e $WORK/nginx-stream/logs/error.log -c $WORK/conf/nginx-stream.conf -g 'daemon off;'"
PROXY_CMD[lbd]="taskset -c $PROXY_CPU $LBD run -c $WORK/conf/lbd.toml"

PROXY_PID=
PROXY_LOG=
PROXY_SEQ=0
LBD_SKIP_REASON=

# start_proxy SYSTEM KIND: start a fresh proxy for one measurement and wait
# until the listener for KIND (bulk|http|idle) is up. direct starts nothing.
start_proxy() {
	local sys=$1 port
	PROXY_PID=
	[[ $sys == direct ]] && return 0
	port=$(front_port "$sys" "$2")
	PROXY_SEQ=$((PROXY_SEQ + 1))
	PROXY_LOG=$WORK/raw/proxy-$PROXY_SEQ-$sys.log
	case $sys in
	haproxy) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" haproxy -f "$WORK/conf/haproxy.cfg" -db ;;
	nginx) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx-stream/" \
		-e "$WORK/nginx-stream/logs/error.log" -c "$WORK/conf/nginx-stream.conf" -g 'daemon off;' ;;
	lbd) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" "$LBD" run -c "$WORK/conf/lbd.toml" ;;
	esac
	PROXY_PID=$LAST_PID
	if ! wait_listen "$port" "$PROXY_PID" 10; then
		log "$sys did not start listening on 127.0.0.1:$port; its output ($PROXY_LOG):"
		tail -n 20 "$PROXY_LOG" >&2 || true
		stop_pid "$PROXY_PID"
		PROXY_PID=
		return 1
	fi
	sleep 0.3 # let it finish starting before anything is measured
}

# rss_kb PID: VmRSS in kB, summed over the process and its descendants.
rss_kb() { proc_sum "$1" status '/^VmRSS:/{print $2}'; }

# proc_sum PID FILE AWK: the sum over the process and its descendants of
# what AWK prints from /proc/PID/FILE.
proc_sum() {
	local p sum=0 v
	for p in "$1" $(descendants "$1"); do
		v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || true)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ results

declare -A VAL     # "metric|system" -> values of all rounds, space-separated
declare -A CPU     # "metric|system" -> proxy CPU % of all rounds
declare -A OTHER   # "metric|system" -> CPU % of other processes on the proxy core
declare -A CMDLINE # "metric|system" -> client command of the first round

add_cpu() { CPU[$1|$2]="${CPU[$1|$2]:-}${CPU[$1|$2]:+ }$3"; }
add_other() { OTHER[$1|$2]="${OTHER[$1|$2]:-}${OTHER[$1|$2]:+ }$3"; }

# load_begin; ...; load_end METRIC SYSTEM ROUND: record the proxy's
# CPU use during one load, and that of every other process on its core. A
# busy proxy core makes the figure worthless, so that is flagged.
load_begin() {
	L_T0=$(cpu_ticks "$PROXY_PID")
	L_C0=$(core_ticks "$PROXY_CPU")
	L_W0=$EPOCHREALTIME
}
load_end() {
	local t1 c1 other secs
	t1=$(cpu_ticks "$PROXY_PID")
	c1=$(core_ticks "$PROXY_CPU")
	secs=$(elapsed "$L_W0")
	[[ $2 == direct ]] || add_cpu "$1" "$2" "$(pct "$L_T0" "$t1" "$secs")"
	other=$(awk -v c=$((c1 - L_C0)) -v t=$((t1 - L_T0)) -v s="$secs" -v hz="$CLK_TCK" \
		'BEGIN{o = (c - t) / hz / s * 100; if (o < 0) o = 0; printf "%.0f", o}')
	add_other "$1" "$2" "$other"
	if [[ $2 != direct && $other -gt 10 ]]; then
		warn "$1/$2 round $3: other processes used ${other}% of CPU $PROXY_CPU during the load, so this figure is unreliable"
	fi
}

# ---------------------------------------------------------------- workloads

start_backends() {
	if has_workload bulk; then
		start_bg "$WORK/raw/iperf3-server.log" taskset -c "$CLIENT_CPU" iperf3 -s -B 127.0.0.1 -p "$B_IPERF"
		wait_listen "$B_IPERF" "$LAST_PID" 10 || die "iperf3 server did not start, see $WORK/raw/iperf3-server.log"
	fi
	if has_workload conn || has_workload rr; then
		nginx -t -p "$WORK/nginx-backend/" -e "$WORK/nginx-backend/logs/error.log" \
			-c "$WORK/conf/nginx-backend.conf" >"$WORK/raw/nginx-backend-test.log" 2>&1 ||
			die "nginx backend config invalid, see $WORK/raw/nginx-backend-test.log"
		start_bg "$WORK/raw/nginx-backend.log" taskset -c "$CLIENT_CPU" nginx -p "$WORK/nginx-backend/" \
			-e "$WORK/nginx-backend/logs/error.log" -c "$WORK/conf/nginx-backend.conf" -g 'daemon off;'
		wait_listen "$B_HTTP" "$LAST_PID" 10 || die "nginx backend did not start, see $WORK/raw/nginx-backend.log"
		local body
		body=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$B_HTTP; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3" | tail -n 1) || true
		[[ $body == ok ]] || die "nginx backend answered '$body' instead of 'ok'"
	fi
}

build_idleconns() {
	IDLE_BIN=$WORK/idleconns
	# Built as its own module so that a main module in flux cannot break it.
	mkdir -p "$TMP/idleconns"
	cp bench/idleconns/main.go "$TMP/idleconns/"
	printf 'module idleconns\n\ngo 1.22\n' >"$TMP/idleconns/go.mod"
	(cd "$TMP/idleconns" && GOWORK=off GOFLAGS='' go build -o "$IDLE_BIN" .) >"$WORK/raw/idleconns-build.log" 2>&1 ||
		die "building bench/idleconns failed, see $WORK/raw/idleconns-build.log"
}

# measure_bulk SYSTEM ROUND STREAMS
measure_bulk() {
	local sys=$1 r=$2 P=$3 metric=bulk$3 port out gbps
	port=$(front_port "$sys" bulk)
	out=$WORK/raw/$metric-$sys-r$r.json
	local cmd=(taskset -c "$CLIENT_CPU" iperf3 -c 127.0.0.1 -p "$port" -t "$BULK_SECS" -P "$P" -J)
	set_cmd "$metric" "$sys" "${cmd[*]}"
	load_begin
	if ! timeout $((BULK_SECS + 30)) "${cmd[@]}" >"$out" 2>"$out.err"; then
		warn "$metric/$sys round $r: iperf3 failed: $(jq -r '.error // empty' "$out" 2>/dev/null || true) $(head -c 300 "$out.err") (see $out)"
		return 1
	fi
	load_end "$metric" "$sys" "$r"
	proxy_ok "$sys" || return 1
	gbps=$(jq -r '.end.sum_received.bits_per_second // empty | . / 1e9 | (. * 100 | round) / 100' "$out" 2>/dev/null || true)
	if [[ -z $gbps ]]; then
		warn "$metric/$sys round $r: no throughput in iperf3 output $out"
		return 1
	fi
	add_val "$metric" "$sys" "$gbps"
	log "  $metric $sys: $gbps Gbit/s"
}

# measure_wrk SYSTEM ROUND conn|rr
measure_wrk() {
	local sys=$1 r=$2 mode=$3 port out rps p50 p99 total non2xx errs
	port=$(front_port "$sys" http)
	out=$WORK/raw/$mode-$sys-r$r.txt
	local cmd=(taskset -c "$CLIENT_CPU" wrk -t"$WRK_THREADS" -d"${WRK_SECS}s" --latency)
	if [[ $mode == conn ]]; then
		cmd+=(-c32 -H "Connection: close")
	else
		cmd+=(-c64)
	fi
	cmd+=("http://127.0.0.1:$port/")
	set_cmd "$mode" "$sys" "$(show_cmd "${cmd[@]}")"
	load_begin
	if ! timeout $((WRK_SECS + 30)) "${cmd[@]}" >"$out" 2>&1; then
		warn "$mode/$sys round $r: wrk failed: $(tail -n 3 "$out" | tr '\n' ' ') (see $out)"
		return 1
	fi
	if [[ $mode == conn ]]; then load_end conn "$sys" "$r"; else load_end rr_rps "$sys" "$r"; fi
	proxy_ok "$sys" || return 1
	rps=$(awk '/^Requests\/sec:/{print $2}' "$out")
	total=$(awk '/ requests in /{print $1}' "$out")
	p50=$(awk '$1=="50%"{print $2; exit}' "$out")
	p99=$(awk '$1=="99%"{print $2; exit}' "$out")
	non2xx=$(awk '/Non-2xx or 3xx responses:/{print $NF}' "$out")
	errs=$(awk '/Socket errors:/{gsub(/,/,""); print $4+$6+$8+$10}' "$out")
	if [[ -z $rps || -z $total || $total == 0 ]]; then
		warn "$mode/$sys round $r: no requests completed (see $out)"
		return 1
	fi
	if [[ ${non2xx:-0} -gt 0 || ${errs:-0} -gt 0 ]]; then
		warn "$mode/$sys round $r: ${non2xx:-0} non-2xx responses and ${errs:-0} socket errors in $total requests (see $out)"
	fi
	rps=$(awk -v v="$rps" 'BEGIN{printf "%.0f", v}')
	if [[ $mode == conn ]]; then
		add_val conn "$sys" "$rps"
		log "  conn $sys: $rps connections/s"
	else
		if ! p50=$(to_ms "$p50") || ! p99=$(to_ms "$p99"); then
			warn "rr/$sys round $r: cannot parse latency distribution (see $out)"
			return 1
		fi
		add_val rr_rps "$sys" "$rps"
		add_val rr_p50 "$sys" "$p50"
		add_val rr_p99 "$sys" "$p99"
		log "  rr $sys: $rps req/s, p50 $p50 ms, p99 $p99 ms"
	fi
}

# measure_idle SYSTEM ROUND
measure_idle() {
	local sys=$1 r=$2 port out before after pid i kib
	[[ $sys == direct ]] && return 0 # no proxy, no proxy memory
	port=$(front_port "$sys" idle)
	out=$WORK/raw/idle-$sys-r$r.txt
	local cmd=(taskset -c "$CLIENT_CPU" "$IDLE_BIN" -listen "127.0.0.1:$B_IDLE" -target "127.0.0.1:$port"
		-n "$IDLE_CONNS" -timeout 60s -hold 180s)
	set_cmd idle "$sys" "taskset -c $CLIENT_CPU bench/work/idleconns -listen 127.0.0.1:$B_IDLE -target 127.0.0.1:$port -n $IDLE_CONNS -timeout 60s -hold 180s"
	before=$(rss_kb "$PROXY_PID")
	start_bg "$out" "${cmd[@]}"
	pid=$LAST_PID
	for ((i = 0; i < 900; i++)); do
		grep -q '^ESTABLISHED' "$out" && break
		alive "$pid" || break
		sleep 0.1
	done
	if ! grep -q '^ESTABLISHED' "$out"; then
		warn "idle/$sys round $r: connections not established: $(tail -n 2 "$out" | tr '\n' ' ') (see $out)"
		stop_pid "$pid"
		return 1
	fi
	sleep 1 # let the proxy settle
	after=$(rss_kb "$PROXY_PID")
	# The CPU the proxy spends holding the connections, doing nothing
	# else, over IDLE_CPU_SECS: its timers and housekeeping.
	local cpu
	cpu=$(cpu_pct "$PROXY_PID" "$IDLE_CPU_SECS")
	proxy_ok "$sys" || {
		stop_pid "$pid"
		return 1
	}
	stop_pid "$pid"
	kib=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN{printf "%.2f", (a-b)/n}')
	echo "proxy VmRSS before=${before}kB after=${after}kB per_conn=${kib}KiB" >>"$out"
	add_val idle "$sys" "$kib"
	add_val idlecpu "$sys" "$cpu"
	echo "proxy CPU while idle: ${cpu}% of a core over ${IDLE_CPU_SECS}s" >>"$out"
	log "  idle $sys: RSS ${before} kB -> ${after} kB, $kib KiB per connection; ${cpu}% of a core while idle"
}

# cpu_pct PID SECS: the CPU the process and its descendants used over the
# next SECS seconds, in percent of one core.
cpu_pct() {
	local pid=$1 secs=$2 t0 t1 hz
	hz=$(getconf CLK_TCK)
	t0=$(cpu_ticks "$pid")
	sleep "$secs"
	t1=$(cpu_ticks "$pid")
	awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" 'BEGIN{printf "%.3f", (b-a)*100/hz/s}'
}

# cpu_ticks PID: utime+stime of the process and its descendants.
cpu_ticks() { proc_sum "$1" stat '{print $14+$15}'; }

# run_one WORKLOAD SYSTEM ROUND: one measurement on a freshly started proxy.
run_one() {
	local w=$1 sys=$2 r=$3 kind=http
	case $w in bulk*) kind=bulk ;; idle) kind=idle ;; esac
	[[ $w == idle && $sys == direct ]] && return 0
	quiet_check "$w/$sys round $r"
	if ! start_proxy "$sys" "$kind"; then
		if [[ $sys == lbd ]]; then
			LBD_SKIP_REASON="lbd did not start (see $PROXY_LOG)"
			warn "$LBD_SKIP_REASON; skipping lbd for the rest of the run"
			drop_system lbd
		else
			warn "$sys did not start for $w round $r (see $PROXY_LOG)"
		fi
		return 0
	fi
	case $w in
	bulk1) measure_bulk "$sys" "$r" 1 || true ;;
	bulk8) measure_bulk "$sys" "$r" 8 || true ;;
	conn) measure_wrk "$sys" "$r" conn || true ;;
	rr) measure_wrk "$sys" "$r" rr || true ;;
	idle) measure_idle "$sys" "$r" || true ;;
	esac
	stop_proxy
	sleep "$COOLDOWN"
}

# ------------------------------------------------------------------- checks

if has_system lbd; then
	if [[ ! -x $LBD ]]; then
		LBD_SKIP_REASON="$LBD not found or not executable (run make build)"
		warn "$LBD_SKIP_REASON; skipping lbd"
		drop_system lbd
	elif ! "$LBD" check -c "$WORK/conf/lbd.toml" >"$WORK/raw/lbd-check.log" 2>&1; then
		# Not fatal: "check" may lag behind "run". A failing start skips lbd.
		log "note: '$LBD check' did not accept the config: $(head -c 300 "$WORK/raw/lbd-check.log")"
	fi
fi
if has_system nginx; then
	nginx -t -p "$WORK/nginx-stream/" -e "$WORK/nginx-stream/logs/error.log" -c "$WORK/conf/nginx-stream.conf" \
		>"$WORK/raw/nginx-stream-test.log" 2>&1 || {
		warn "nginx stream config rejected, skipping nginx: $(tail -n 2 "$WORK/raw/nginx-stream-test.log" | tr '\n' ' ')"
		drop_system nginx
	}
fi
if has_system haproxy; then
	haproxy -c -f "$WORK/conf/haproxy.cfg" >"$WORK/raw/haproxy-check.log" 2>&1 || {
		warn "haproxy config rejected, skipping haproxy: $(tail -n 2 "$WORK/raw/haproxy-check.log" | tr '\n' ' ')"
		drop_system haproxy
	}
fi
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "no system left to measure"
SYSTEMS_RUN=("${SYS_LIST[@]}")

# --------------------------------------------------------------------- run

has_workload idle && build_idleconns
start_backends

log "workloads: ${WORKLOADS[*]}; systems: ${SYS_LIST[*]}; rounds: $ROUNDS; bulk ${BULK_SECS}s, wrk ${WRK_SECS}s"
log "raw outputs: ${WORK#"$ROOT"/}"

STEPS=()
for w in "${WORKLOADS[@]}"; do
	case $w in
	bulk) STEPS+=(bulk1 bulk8) ;;
	*) STEPS+=("$w") ;;
	esac
done
for w in "${STEPS[@]}"; do
	for ((r = 1; r <= ROUNDS; r++)); do
		log "$w, round $r of $ROUNDS"
		for sys in "${SYS_LIST[@]}"; do
			run_one "$w" "$sys" "$r"
		done
	done
done

# ------------------------------------------------------------------ report

# fmt_num METRIC VALUE: print a value with a precision fitting the metric.
fmt_num() {
	[[ -z $2 ]] && {
		echo "–"
		return
	}
	case $1 in
	bulk*) awk -v v="$2" 'BEGIN{printf "%.1f", v}' ;;
	conn | rr_rps) awk -v v="$2" 'BEGIN{printf "%.1fk", v/1000}' ;;
	rr_p50 | rr_p99) awk -v v="$2" 'BEGIN{printf "%.3f", v}' ;;
	idle) awk -v v="$2" 'BEGIN{printf "%.2f", v}' ;;
	idlecpu) awk -v v="$2" 'BEGIN{printf "%.2f", v}' ;;
	esac
}

METRICS=()
for w in "${STEPS[@]}"; do
	case $w in
	rr) METRICS+=(rr_rps rr_p50 rr_p99) ;;
	idle) METRICS+=(idle idlecpu) ;;
	*) METRICS+=("$w") ;;
	esac
done

declare -A LABEL=(
	[bulk1]="bulk, iperf3 -P 1 (Gbit/s)"
	[bulk8]="bulk, iperf3 -P 8 (Gbit/s)"
	[conn]="connection rate, Connection: close, 32 conns (conn/s)"
	[rr_rps]="request/response, keep-alive, 64 conns (req/s)"
	[rr_p50]="request/response p50 (ms)"
	[rr_p99]="request/response p99 (ms)"
	[idle]="memory per idle connection, $IDLE_CONNS conns (KiB RSS)"
	[idlecpu]="CPU while holding $IDLE_CONNS idle conns (% of a core)"
)
declare -A SHORT=([bulk1]="bulk -P1" [bulk8]="bulk -P8" [conn]="conn/s" [rr_rps]="rr req/s"
	[rr_p50]="rr p50" [rr_p99]="rr p99" [idle]="idle KiB/conn" [idlecpu]="idle CPU %")
declare -A TARGET=([bulk1]="≥ 1.0" [bulk8]="≥ 1.0" [conn]="≥ 1.0" [rr_rps]="≥ 1.0" [rr_p50]="–"
	[rr_p99]="≤ 1.0" [idle]="≤ 0.6" [idlecpu]="–")
declare -A TARGET_OK=([bulk1]=">= 1.0" [bulk8]=">= 1.0" [conn]=">= 1.0" [rr_rps]=">= 1.0"
	[rr_p99]="<= 1.0" [idle]="<= 0.6")

declare -A MED
for m in "${METRICS[@]}"; do
	for s in direct haproxy nginx lbd; do
		MED[$m|$s]=$(median "${VAL[$m|$s]:-}")
	done
done

# version_of TOOL: its version, or "?"; never fails.
version_of() {
	local v=""
	case $1 in
	haproxy) v=$(haproxy -v 2>/dev/null | awk 'NR == 1 {print $3}') || true ;;
	nginx) v=$(nginx -v 2>&1 | sed -n 's|.*nginx/||p') || true ;;
	lbd) v=$("$LBD" version 2>/dev/null | head -n 1) || true ;;
	wrk) v=$(wrk -v 2>&1 | awk 'NR == 1 {print $2}') || true ;;
	iperf3) v=$(iperf3 --version 2>/dev/null | awk 'NR == 1 {print $2}') || true ;;
	go) v=$(go version 2>/dev/null | awk '{print $3}') || true ;;
	esac
	echo "${v:-?}"
} 2>/dev/null

relpath() { sed "s|$ROOT/||g"; }

write_report() {
	local md=$1 m s cols=() v hdr sep line r_h r_n r_nh
	for s in direct haproxy nginx lbd; do
		if has_system "$s" || [[ -n ${MED[${METRICS[0]}|$s]:-} ]] || [[ $s == lbd && -n $LBD_SKIP_REASON ]]; then
			cols+=("$s")
		fi
	done
	{
		echo "# lbd TCP benchmarks"
		echo
		echo "Written by \`bench/run.sh\` (\`make bench\`) on $(date -u '+%Y-%m-%d %H:%M UTC')."
		echo
		echo "- Host: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(nproc --all) CPUs, kernel $(uname -r)"
		echo "- Versions: HAProxy $(version_of haproxy), nginx $(version_of nginx), lbd $(
			if [[ -x $LBD ]]; then version_of lbd; else echo 'not built'; fi
		), wrk $(version_of wrk), iperf3 $(version_of iperf3), $(version_of go)"
		echo "- Each proxy runs alone on CPU $PROXY_CPU (\`taskset -c $PROXY_CPU\`), freshly started for every measurement; clients and backends run on CPU $CLIENT_CPU. All traffic is on 127.0.0.1."
		echo "- Workloads: ${WORKLOADS[*]}; systems in run order: ${SYSTEMS_RUN[*]}; $ROUNDS round(s) per cell, systems interleaved within each round; the table shows the median. iperf3 runs ${BULK_SECS} s, wrk ${WRK_SECS} s."
		echo "- Run-to-run spread on this kind of machine is 10–20%: compare only within one run."
		[[ -n $LBD_SKIP_REASON ]] && echo "- **lbd was skipped:** $(relpath <<<"$LBD_SKIP_REASON")."
		echo
		hdr="| workload |"
		sep="|---|"
		for s in "${cols[@]}"; do
			hdr+=" $(sysname "$s") |"
			sep+="---:|"
		done
		hdr+=" nginx/HAProxy | lbd/HAProxy | lbd/nginx | target lbd/HAProxy |"
		sep+="---:|---:|---:|---|"
		echo "$hdr"
		echo "$sep"
		for m in "${METRICS[@]}"; do
			line="| ${LABEL[$m]} |"
			for s in "${cols[@]}"; do line+=" $(fmt_num "$m" "${MED[$m|$s]}") |"; done
			r_h=$(ratio "${MED[$m|lbd]}" "${MED[$m|haproxy]}")
			r_n=$(ratio "${MED[$m|lbd]}" "${MED[$m|nginx]}")
			local met=""
			if [[ -n $r_h && -n ${TARGET_OK[$m]:-} ]]; then
				if awk -v r="$r_h" -v t="${TARGET_OK[$m]}" 'BEGIN{split(t, a, " "); exit !((a[1] == ">=") ? r >= a[2] : r <= a[2])}'; then
					met=" (met)"
				else
					met=" (**not met**)"
				fi
			fi
			r_nh=$(ratio "${MED[$m|nginx]}" "${MED[$m|haproxy]}")
			line+=" ${r_nh:-–} | ${r_h:-–} | ${r_n:-–} | ${TARGET[$m]}$met |"
			echo "$line"
		done
		echo
		echo "Higher is better except for latency and memory. The memory row is the growth of the proxy's VmRSS (summed over its processes) while $IDLE_CONNS connections, each with one byte exchanged end to end, are held open, divided by $IDLE_CONNS; it has no direct row. The idle CPU row is the CPU the proxy used over $IDLE_CPU_SECS s while holding them (its timers and housekeeping), in percent of one core."
		echo
		echo "## Every round"
		echo
		echo "| workload | system | values, in round order | proxy CPU % | others on CPU $PROXY_CPU % |"
		echo "|---|---|---|---|---|"
		for m in "${METRICS[@]}"; do
			for s in "${cols[@]}"; do
				v=${VAL[$m|$s]:-}
				[[ -z $v && $s == lbd ]] && continue
				echo "| ${SHORT[$m]} | $(sysname "$s") | ${v:-–} | ${CPU[$m|$s]:-–} | ${OTHER[$m|$s]:-–} |"
			done
		done
		echo
		echo "Proxy CPU % is the proxy's user+system CPU time over the load's duration (100 = its whole core); the last column is the user+system time of every other process on the proxy's core, which should be near 0."
		if [[ ${#NOTES[@]} -gt 0 ]]; then
			echo
			echo "## Problems during the run"
			echo
			for v in "${NOTES[@]}"; do echo "- $(relpath <<<"$v")"; done
		fi
		echo
		echo "## Commands"
		echo
		echo '```sh'
		echo "# backends (CPU $CLIENT_CPU)"
		has_workload bulk && echo "taskset -c $CLIENT_CPU iperf3 -s -B 127.0.0.1 -p $B_IPERF"
		if has_workload conn || has_workload rr; then
			echo "taskset -c $CLIENT_CPU nginx -c nginx-backend.conf -g 'daemon off;'   # return 200 \"ok\" on 127.0.0.1:$B_HTTP"
		fi
		has_workload idle && echo "# idle: bench/idleconns is the backend itself, listening on 127.0.0.1:$B_IDLE"
		echo "# proxies (CPU $PROXY_CPU), one fresh process per measurement"
		for s in "${cols[@]}"; do
			[[ $s == direct ]] && continue
			echo "${PROXY_CMD[$s]}   # $(sysname "$s")" | relpath
		done
		echo "# clients (CPU $CLIENT_CPU)"
		for m in "${STEPS[@]}"; do
			for s in "${cols[@]}"; do
				[[ -n ${CMDLINE[$m|$s]:-} ]] && echo "${CMDLINE[$m|$s]}   # $(sysname "$s")" | relpath
			done
		done
		echo '```'
		echo
		echo "## Configurations"
		for s in "${cols[@]}"; do
			case $s in
			haproxy) v=haproxy.cfg ;;
			nginx) v=nginx-stream.conf ;;
			lbd) v=lbd.toml ;;
			*) continue ;;
			esac
			echo
			echo "\`$v\`:"
			echo
			echo '```'
			relpath <"$WORK/conf/$v"
			echo '```'
		done
		if has_workload conn || has_workload rr; then
			echo
			echo "\`nginx-backend.conf\`:"
			echo
			echo '```'
			relpath <"$WORK/conf/nginx-backend.conf"
			echo '```'
		fi
	} >"$md"
}

color_of() {
	case $1 in haproxy) echo '#8c8c8c' ;; nginx) echo '#2ca25f' ;; lbd) echo '#2b6cb0' ;; *) echo '#000000' ;; esac
}

write_plot() {
	local png=$1 dat=$WORK/tcp-ratios.dat gp=$WORK/tcp.gp m s v cols=() n=0 any=0
	if [[ -z $(for m in "${METRICS[@]}"; do echo "${MED[$m|haproxy]:-}"; done | tr -d '\n') ]]; then
		log "no HAProxy results, so no plot of ratios to HAProxy"
		return 0
	fi
	for s in haproxy nginx lbd; do
		for m in "${METRICS[@]}"; do [[ -n ${MED[$m|$s]:-} ]] && {
			cols+=("$s")
			break
		}; done
	done
	{
		printf '"metric"'
		for s in "${cols[@]}"; do printf ' "%s"' "$(sysname "$s")"; done
		echo
		for m in "${METRICS[@]}"; do
			[[ -n ${MED[$m|haproxy]:-} ]] || continue
			printf '"%s"' "${SHORT[$m]}"
			for s in "${cols[@]}"; do
				v=$(ratio "${MED[$m|$s]:-}" "${MED[$m|haproxy]}")
				printf ' %s' "${v:-NaN}"
			done
			echo
			any=1
		done
	} >"$dat"
	[[ $any == 1 ]] || return 0
	local term="pngcairo size 1100,560 font ',11'"
	gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 || term="png size 1100,560"
	{
		echo "set terminal $term"
		echo "set output '$png'"
		printf 'set title "TCP proxies on one core, ratio to HAProxy in the same run (%s)\\nhigher is better, except rr p50/p99 and idle KiB/conn"\n' "$(date -u +%Y-%m-%d)"
		echo "set style data histograms"
		echo "set style histogram clustered gap 1"
		echo "set style fill solid 0.85 border -1"
		echo "set boxwidth 0.9"
		echo "set ylabel 'ratio to HAProxy'"
		echo "set yrange [0:*]"
		echo "set grid ytics"
		echo "set key outside right top"
		echo "set datafile missing 'NaN'"
		echo "set key autotitle columnheader"
		echo "set offsets 0, 0, graph 0.08, 0"
		echo "set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb 'black'"
		local k=${#cols[@]} col off
		printf "plot "
		for s in "${cols[@]}"; do
			n=$((n + 1))
			col=$((n + 1))
			[[ $n -gt 1 ]] && printf ", "
			if [[ $n == 1 ]]; then
				printf "'%s' using %d:xtic(1) title columnheader(%d) lc rgb '%s'" "$dat" "$col" "$col" "$(color_of "$s")"
			else
				printf "'' using %d title columnheader(%d) lc rgb '%s'" "$col" "$col" "$(color_of "$s")"
			fi
		done
		# Value labels over the bars: bar i of k sits at row + (i - (k-1)/2) / (k + gap).
		n=0
		for s in "${cols[@]}"; do
			off=$(awk -v i="$n" -v k="$k" 'BEGIN{printf "%.4f", (i - (k - 1) / 2) / (k + 1)}')
			n=$((n + 1))
			col=$((n + 1))
			printf ", '' using (\$0 + %s):%d:(column(%d) == column(%d) ? sprintf('%%.2f', column(%d)) : '') with labels offset 0,0.7 font ',9' notitle" \
				"$off" "$col" "$col" "$col" "$col"
		done
		echo
	} >"$gp"
	if gnuplot "$gp" >"$WORK/gnuplot.log" 2>&1; then
		log "plot: ${png#"$ROOT"/}"
	else
		warn "gnuplot failed, see $WORK/gnuplot.log"
	fi
}

mkdir -p "$RESULTS_DIR"
write_plot "$(cd "$RESULTS_DIR" && pwd)/tcp.png"
write_report "$RESULTS_DIR/tcp.md"
cp "$RESULTS_DIR/tcp.md" "$WORK/tcp.md"
log "table: $RESULTS_DIR/tcp.md"
echo
awk '/^\| workload \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/tcp.md"

if [[ $RUN_UDP == 1 ]]; then
	# Stop the TCP backends first, so that the UDP run has the machine to itself.
	for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
	echo
	log "udp: running bench/udp.sh"
	LBD_BENCH_LOCKED=1 "$ROOT/bench/udp.sh"
fi

if [[ $RUN_HTTP == 1 ]]; then
	# The HTTP run needs the machine to itself too.
	for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
	echo
	log "http: running bench/http.sh"
	LBD_BENCH_LOCKED=1 "$ROOT/bench/http.sh"
fi
