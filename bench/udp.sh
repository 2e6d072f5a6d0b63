#!/usr/bin/env bash
# UDP DNS benchmark: dnsperf against dnsmasq, straight to the server, through
# the nginx stream module (udp) and through lbd (protocol = "udp"). HAProxy has
# no UDP. `make bench` runs this after the TCP workloads, as `bench/run.sh udp`.
#
# Usage: bench/udp.sh            (same as: bench/run.sh udp)
#
# Three passes per system and round, on one freshly started proxy:
#   throughput  dnsperf as fast as it goes: queries/s, queries lost, average latency
#   latency     dnsperf at a fixed LAT_QPS, every query logged: p50, p99, lost
#   capped      dnsperf as fast as it goes, with the proxy held to CAP_PCT% of
#               its core by a cgroup CPU quota: CPU 0 (dnsperf and dnsmasq)
#               then has room to spare, so the proxy is the bottleneck and the
#               figure is the work each proxy does per unit of CPU (direct
#               has no proxy and is not run)
#
# Environment (defaults in brackets):
#   SYSTEMS          systems in run order; haproxy is listed as "no UDP" and
#                    never run ["direct haproxy nginx lbd"]
#   ROUNDS           rounds per measurement; the table shows the median [3]
#   DURATION         seconds per load, sets both of the next two
#   DNS_SECS         dnsperf duration of the throughput pass [10]
#   LAT_SECS         dnsperf duration of the latency pass [5]
#   LAT_QPS          query rate of the latency pass, 0 skips that pass [20000]
#   DNS_CLIENTS      dnsperf -c, client sockets [8]
#   DNS_OUTSTANDING  dnsperf -q, queries in flight at most [100]
#   QPS_LIMIT        dnsperf -Q of the throughput pass, empty for none []
#   CAP_PCT          the capped pass's CPU quota, % of one core, 0 skips [40]
#   COOLDOWN         seconds of rest between measurements [2]
#   PORT_BASE        127.0.0.1 ports PORT_BASE+4 (dnsmasq, udp and tcp), +24
#                    (nginx, udp) and +34 (lbd, udp) [19200]
#   LBD              lbd binary [./bin/lbd]
#   RESULTS_DIR      where udp.md and udp.png go [bench/results]
#   NO_INSTALL=1     never run apt-get
#
# The proxy runs alone on CPU 1; dnsperf and dnsmasq run on CPU 0. dnsmasq
# answers every name under bench.test itself (--address), reads neither
# /etc/resolv.conf nor /etc/hosts and has no upstream server, so no query
# leaves 127.0.0.1. Everything started here is stopped on exit. Raw outputs go
# to bench/work/<timestamp>-udp/.
set -Eeuo pipefail
trap 'log "ERROR: status $? at line $LINENO: $BASH_COMMAND"' ERR

PATH=$PATH:/usr/sbin:/sbin # dnsmasq and nginx live there
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SYSTEMS=${SYSTEMS:-"direct haproxy nginx lbd"}
ROUNDS=${ROUNDS:-3}
DNS_SECS=${DNS_SECS:-${DURATION:-10}}
LAT_SECS=${LAT_SECS:-${DURATION:-5}}
LAT_QPS=${LAT_QPS:-20000}
DNS_CLIENTS=${DNS_CLIENTS:-8}
DNS_OUTSTANDING=${DNS_OUTSTANDING:-100}
QPS_LIMIT=${QPS_LIMIT:-}
COOLDOWN=${COOLDOWN:-2}
CAP_PCT=${CAP_PCT:-40}
PORT_BASE=${PORT_BASE:-19200}
LBD=${LBD:-./bin/lbd}
RESULTS_DIR=${RESULTS_DIR:-bench/results}
NO_INSTALL=${NO_INSTALL:-0}

PROXY_CPU=1
CLIENT_CPU=0
ZONE=bench.test
ANSWER=192.0.2.1 # TEST-NET-1: an answer only, never a destination
NAMES=1000

log() { printf '[bench-udp %s] %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
NOTES=()

# ---------------------------------------------------------------- arguments

for arg in "$@"; do
	case $arg in
	udp) ;;
	-h | --help)
		sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument '$arg' (bench/udp.sh takes none but --help)" ;;
	esac
done

read -r -a SYS_LIST <<<"$SYSTEMS"
for s in "${SYS_LIST[@]}"; do
	case $s in
	direct | haproxy | nginx | lbd) ;;
	*) die "unknown system '$s' in SYSTEMS (expected: direct haproxy nginx lbd)" ;;
	esac
done
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "SYSTEMS is empty"
for v in ROUNDS DNS_SECS LAT_SECS LAT_QPS DNS_CLIENTS DNS_OUTSTANDING COOLDOWN PORT_BASE CAP_PCT; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 || ($v == COOLDOWN || $v == LAT_QPS || $v == CAP_PCT) && ${!v} == 0 ]] ||
		die "$v must be a positive integer, got '${!v}'"
done
[[ -z $QPS_LIMIT || $QPS_LIMIT =~ ^[1-9][0-9]*$ ]] || die "QPS_LIMIT must be empty or a positive integer, got '$QPS_LIMIT'"

# HAProxy (open-source) has no UDP: it gets a "no UDP" column and is never run.
SHOW_HAPROXY=0
if has_system haproxy; then
	SHOW_HAPROXY=1
	drop_system haproxy
fi
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "SYSTEMS has nothing that speaks UDP (haproxy has no UDP)"

# -------------------------------------------------------------------- setup

[[ $(nproc --all) -ge 2 ]] || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, load on CPU $CLIENT_CPU)"

mkdir -p bench/work
# bench/run.sh holds the lock already when it runs this script.
if [[ ${LBD_BENCH_LOCKED:-0} != 1 ]]; then
	exec 9>bench/work/.lock
	flock -n 9 || die "another bench/run.sh or bench/udp.sh is running (bench/work/.lock)"
fi

STAMP=$(date +%Y%m%d-%H%M%S)-udp
WORK=$ROOT/bench/work/$STAMP
mkdir -p "$WORK/raw" "$WORK/conf"
ln -sfn "$STAMP" bench/work/latest-udp
TMP=$(mktemp -d /tmp/lbd-bench-udp.XXXXXX)

# --------------------------------------------------------- process handling

STARTED=()
LAST_PID=

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
	# dnsmasq never forks with --keep-in-foreground; should it ever, its pid
	# file still names it, and its command line names this run's directory.
	pid=$(cat "$WORK/dnsmasq.pid" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--pid-file=$WORK/dnsmasq.pid"; then
		kill -TERM "$pid" 2>/dev/null || true
	fi
	rm -rf "$TMP"
	[[ -n ${CAP_DIR:-} ]] && rmdir "$CAP_DIR" 2>/dev/null
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------- installation

install_missing() {
	local pkgs=()
	command -v dnsperf >/dev/null || pkgs+=(dnsperf)
	# dnsmasq-base is the bare program; the "dnsmasq" package would also
	# install and start a system DNS service on port 53.
	command -v dnsmasq >/dev/null || [[ -x /usr/sbin/dnsmasq ]] || pkgs+=(dnsmasq-base)
	if has_system nginx; then
		command -v nginx >/dev/null || pkgs+=(nginx)
		{ command -v nginx >/dev/null && nginx_has_stream; } || pkgs+=(libnginx-mod-stream)
	fi
	command -v gnuplot >/dev/null || pkgs+=(gnuplot-nox)
	command -v taskset >/dev/null || pkgs+=(util-linux)
	command -v ss >/dev/null || pkgs+=(iproute2)
	apt_install "${pkgs[@]}"
}

install_missing
for t in dnsperf dnsmasq taskset ss; do
	command -v "$t" >/dev/null || die "$t not found"
done
if has_system nginx && ! command -v nginx >/dev/null; then die "nginx not found"; fi
if has_system nginx && ! nginx_has_stream; then die "nginx has no stream module (apt-get install libnginx-mod-stream)"; fi

# -------------------------------------------------------------------- ports

B_DNS=$((PORT_BASE + 4))

# front_port SYSTEM: the UDP port dnsperf sends to for that system.
front_port() {
	case $1 in
	direct) echo "$B_DNS" ;;
	nginx) echo $((PORT_BASE + 24)) ;;
	lbd) echo $((PORT_BASE + 34)) ;;
	esac
}

udp_bound() { [[ -n $(ss -Huln "sport = :$1" 2>/dev/null) ]]; }

# wait_udp PORT PID SECONDS: wait until a UDP socket is bound to PORT; fail
# early if PID dies.
wait_udp() { wait_for udp_bound "$@"; }

check_ports_free() {
	local p s busy=()
	udp_bound "$B_DNS" && busy+=("udp/$B_DNS")
	listening "$B_DNS" && busy+=("tcp/$B_DNS") # dnsmasq listens on tcp too
	for s in "${SYS_LIST[@]}"; do
		[[ $s == direct ]] && continue
		p=$(front_port "$s")
		udp_bound "$p" && busy+=("udp/$p")
	done
	if [[ ${#busy[@]} -gt 0 ]]; then
		ss -Htulnp | grep -E ":($B_DNS|$(front_port nginx)|$(front_port lbd))\b" >&2 || true
		die "ports already in use: ${busy[*]}; set PORT_BASE to a free range"
	fi
}
check_ports_free

# ------------------------------------------------------------------ configs

# The query file: A queries for h1..h$NAMES.$ZONE, all answered by dnsmasq.
QUERIES=$WORK/conf/queries.txt
for ((i = 1; i <= NAMES; i++)); do echo "h$i.$ZONE A"; done >"$QUERIES"
echo "h1.$ZONE A" >"$WORK/conf/probe.txt"

# dnsmasq: answers $ZONE itself; no resolv.conf, no hosts file, no upstream
# server, no config file, no daemonising, no syslog, its own pid file.
DNSMASQ_PID=
DNSMASQ_ARGS=(--keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll
	--port="$B_DNS" --listen-address=127.0.0.1 --bind-interfaces
	--address="/$ZONE/$ANSWER" --cache-size=0 --log-facility=-
	--pid-file="$WORK/dnsmasq.pid")
# As root it drops to nobody once its sockets are open.
if [[ $(id -u) == 0 ]]; then DNSMASQ_ARGS+=(--user=nobody --group=nogroup); fi

write_nginx_udp_conf() {
	local d=$WORK/nginx-udp mod=""
	mkdir -p "$d/logs"
	if m=$(stream_module); then mod="load_module $m;"; fi
	cat >"$WORK/conf/nginx-udp.conf" <<EOF
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
        listen 127.0.0.1:$(front_port nginx) udp;
        proxy_pass 127.0.0.1:$B_DNS;
        proxy_responses 1;
        proxy_timeout 10s;
    }
}
EOF
}

write_lbd_conf() {
	cat >"$WORK/conf/lbd-udp.toml" <<EOF
[global]
workers = 1
metrics_listen = ""
admin_socket = "$TMP/lbd-admin.sock"
log_level = "warn"
shutdown_timeout = "2s"

[[listener]]
name = "dns"
bind = "127.0.0.1:$(front_port lbd)"
protocol = "udp"
pool = "dns"
udp_responses = 1
udp_reuse_sockets = true
idle_timeout = "10s"

[[pool]]
name = "dns"
algorithm = "maglev"
hash = "source_ip_port"

  [[pool.backend]]
  address = "127.0.0.1:$B_DNS"

  [pool.health_check]
  type = "none"
EOF
}

write_nginx_udp_conf
write_lbd_conf

# ------------------------------------------------------------------ proxies

declare -A PROXY_CMD
PROXY_CMD[nginx]="taskset -c $PROXY_CPU nginx -p $WORK/nginx-udp/ -e $WORK/nginx-udp/logs/error.log -c $WORK/conf/nginx-udp.conf -g 'daemon off;'"
PROXY_CMD[lbd]="taskset -c $PROXY_CPU $LBD run -c $WORK/conf/lbd-udp.toml"

PROXY_PID=
PROXY_LOG=
PROXY_SEQ=0
LBD_SKIP_REASON=

# probe PORT: one query; succeeds if it was answered with NOERROR.
probe() {
	local out=$WORK/raw/probe-$1-$PROXY_SEQ.txt
	timeout 10 taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/conf/probe.txt" -n 1 -t 2 >"$out" 2>&1 || true
	grep -Eq 'Queries completed:[[:space:]]+1 ' "$out" && grep -Eq 'Response codes:[[:space:]]+NOERROR 1 ' "$out"
}

# start_proxy SYSTEM: start a fresh proxy for one measurement, wait until its
# UDP socket is bound and one query goes through. direct starts nothing.
start_proxy() {
	local sys=$1 port i
	PROXY_PID=
	[[ $sys == direct ]] && return 0
	port=$(front_port "$sys")
	PROXY_SEQ=$((PROXY_SEQ + 1))
	PROXY_LOG=$WORK/raw/proxy-$PROXY_SEQ-$sys.log
	case $sys in
	nginx) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx-udp/" \
		-e "$WORK/nginx-udp/logs/error.log" -c "$WORK/conf/nginx-udp.conf" -g 'daemon off;' ;;
	lbd) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" "$LBD" run -c "$WORK/conf/lbd-udp.toml" ;;
	esac
	PROXY_PID=$LAST_PID
	if ! wait_udp "$port" "$PROXY_PID" 10; then
		log "$sys did not bind udp 127.0.0.1:$port; its output ($PROXY_LOG):"
		tail -n 20 "$PROXY_LOG" >&2 || true
		stop_pid "$PROXY_PID"
		PROXY_PID=
		return 1
	fi
	for ((i = 0; i < 3; i++)); do
		probe "$port" && break
		sleep 0.3
	done
	if [[ $i == 3 ]]; then
		log "$sys: a query to udp 127.0.0.1:$port got no NOERROR answer (see $WORK/raw/probe-$port-$PROXY_SEQ.txt)"
		stop_pid "$PROXY_PID"
		PROXY_PID=
		return 1
	fi
	sleep 0.3 # let it finish starting before anything is measured
}

CLK_TCK=$(getconf CLK_TCK)

# -------------------------------------------------------------- CPU quota

# cap_setup: a cgroup whose tasks share CAP_PCT% of one core, in slices of
# 10 ms (cgroup v1 cpu controller, or v2 cpu.max). Without one, the capped
# pass is skipped, with a note.
CAP_DIR=
CAP_KIND=
cap_setup() {
	[[ $CAP_PCT -gt 0 ]] || return 0
	local quota=$((CAP_PCT * 100))
	if [[ -d /sys/fs/cgroup/cpu && -w /sys/fs/cgroup/cpu && -e /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]]; then
		CAP_DIR=/sys/fs/cgroup/cpu/lbd-bench-udp-$$
		if mkdir "$CAP_DIR" 2>/dev/null && echo 10000 >"$CAP_DIR/cpu.cfs_period_us" &&
			echo "$quota" >"$CAP_DIR/cpu.cfs_quota_us"; then
			CAP_KIND=v1
			return 0
		fi
	elif [[ -e /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers; then
		CAP_DIR=/sys/fs/cgroup/lbd-bench-udp-$$
		grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
		if mkdir "$CAP_DIR" 2>/dev/null && echo "$quota 10000" >"$CAP_DIR/cpu.max"; then
			CAP_KIND=v2
			return 0
		fi
	fi
	[[ -n $CAP_DIR ]] && rmdir "$CAP_DIR" 2>/dev/null
	CAP_DIR=
	warn "no writable cgroup CPU controller here, so the capped pass is skipped"
	CAP_PCT=0
}

# cap_enter PID: PID, its threads and its children's go under the quota.
cap_enter() {
	local pid t
	for pid in "$1" $(pgrep -P "$1" || true); do
		if [[ $CAP_KIND == v1 ]]; then
			for t in /proc/"$pid"/task/*; do echo "${t##*/}" >"$CAP_DIR/tasks" 2>/dev/null || true; done
		else
			echo "$pid" >"$CAP_DIR/cgroup.procs" 2>/dev/null || true
		fi
	done
}

# ------------------------------------------------------------------ results

declare -A VAL     # "metric|system" -> values of all rounds, space-separated
ROWS_QPS=() # per-round table rows of the throughput pass
ROWS_LAT=() # per-round table rows of the latency pass
ROWS_CAP=() # per-round table rows of the capped pass
declare -A CMDLINE # "metric|system" -> client command of the first round

add_to() {
	local -n arr=$1
	arr[$2|$3]="${arr[$2|$3]:-}${arr[$2|$3]:+ }$4"
}
add_val() { add_to VAL "$@"; }

# load_begin; ...; load_end METRIC SYSTEM ROUND: the proxy's CPU use during
# one load in L_CPU, that of every other process on its core in L_OTHER (a
# busy proxy core makes the figure worthless, so that is flagged), and how
# busy CPU 0 was in L_CORE0.
load_begin() {
	L_T0=$(cpu_ticks "$PROXY_PID")
	L_C0=$(core_ticks "$PROXY_CPU")
	L_Z0=$(core_ticks "$CLIENT_CPU" busy)
	L_D0=$(cpu_ticks "$DNSMASQ_PID")
	children_secs
	L_K0=$CHILD_SECS
	L_W0=$EPOCHREALTIME
}
load_end() {
	local t1 c1 z1 d1 k1 other secs
	children_secs
	k1=$CHILD_SECS
	t1=$(cpu_ticks "$PROXY_PID")
	c1=$(core_ticks "$PROXY_CPU")
	z1=$(core_ticks "$CLIENT_CPU" busy)
	d1=$(cpu_ticks "$DNSMASQ_PID")
	secs=$(elapsed "$L_W0")
	L_CPU="–"
	[[ $2 == direct ]] || L_CPU=$(pct "$L_T0" "$t1" "$secs")
	L_CORE0=$(pct "$L_Z0" "$z1" "$secs")
	other=$(awk -v c=$((c1 - L_C0)) -v t=$((t1 - L_T0)) -v s="$secs" -v hz="$CLK_TCK" \
		'BEGIN{o = (c - t) / hz / s * 100; if (o < 0) o = 0; printf "%.0f", o}')
	L_OTHER=$other
	if [[ $2 != direct && $other -gt 10 ]]; then
		warn "$1/$2 round $3: other processes used ${other}% of CPU $PROXY_CPU during the load, so this figure is unreliable"
	fi
	# CPU 0 is the other half of the bottleneck: dnsperf and dnsmasq share it.
	# Everything else that ran there is its busy time less theirs (dnsperf's
	# from this shell's reaped children, dnsmasq's from /proc). The kernel
	# charges the softirq work they cause on loopback to them as well.
	other=$(awk -v c=$((z1 - L_Z0)) -v d=$((d1 - L_D0)) -v k="$(awk -v a="$L_K0" -v b="$k1" 'BEGIN{print b - a}')" \
		-v s="$secs" -v hz="$CLK_TCK" 'BEGIN{o = (c / hz - d / hz - k) / s * 100; if (o < 0) o = 0; printf "%.0f", o}')
	L_OTHER0=$other
	# In the capped pass CPU 0 has room to spare (that is the point of it):
	# what else ran there only matters if it came close to saturating.
	if [[ $other -gt 10 && ($1 != cap || $L_CORE0 -ge 90) ]]; then
		warn "$1/$2 round $3: other processes used ${other}% of CPU $CLIENT_CPU (dnsperf and dnsmasq's core) during the load, so this figure is unreliable"
	fi
}

# children_secs: CHILD_SECS = user+system seconds of this shell's reaped
# children so far (dnsperf runs in the foreground, so its time lands here when
# it exits). Never call it in $(...): a subshell has children of its own.
children_secs() {
	times >"$TMP/times"
	CHILD_SECS=$(awk 'NR == 2 {
		t = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
		printf "%.3f", t
	}' "$TMP/times")
}

# dp_stat FILE LABEL: the first number after "LABEL:" in dnsperf's statistics.
dp_stat() { awk -v l="$2:" 'index($0, l) { sub(/.*: */, ""); print $1; exit }' "$1"; }

# rcodes FILE: the response codes other than NOERROR, or nothing.
rcodes() { awk '/Response codes:/ { sub(/.*: */, ""); print }' "$1" | tr ',' '\n' | grep -v NOERROR | tr -s ' \n' ' ' || true; }

# ---------------------------------------------------------------- workloads

start_dnsmasq() {
	start_bg "$WORK/raw/dnsmasq.log" taskset -c "$CLIENT_CPU" dnsmasq "${DNSMASQ_ARGS[@]}"
	DNSMASQ_PID=$LAST_PID
	wait_udp "$B_DNS" "$DNSMASQ_PID" 10 || die "dnsmasq did not start, see $WORK/raw/dnsmasq.log"
	probe "$B_DNS" || die "dnsmasq did not answer h1.$ZONE with NOERROR, see $WORK/raw/probe-$B_DNS-0.txt"
	# Belt and braces: dnsmasq must have no upstream to forward anything to.
	grep -q 'no upstream servers configured' "$WORK/raw/dnsmasq.log" ||
		die "dnsmasq does not report 'no upstream servers configured', refusing to run (see $WORK/raw/dnsmasq.log)"
}

# measure_qps SYSTEM ROUND [cap]: dnsperf as fast as it goes; with cap, the
# capped pass (the proxy already under the quota).
measure_qps() {
	local sys=$1 r=$2 pass=${3:-qps} port out qps sent lost avg sd other pre=""
	[[ $pass == cap ]] && pre=cap_
	port=$(front_port "$sys")
	out=$WORK/raw/$pass-$sys-r$r.txt
	local cmd=(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -l "$DNS_SECS"
		-c "$DNS_CLIENTS" -T 1 -q "$DNS_OUTSTANDING")
	[[ -n $QPS_LIMIT && $pass == qps ]] && cmd+=(-Q "$QPS_LIMIT")
	set_cmd "$pass" "$sys" "${cmd[*]}"
	load_begin
	if ! timeout $((DNS_SECS + 30)) "${cmd[@]}" >"$out" 2>&1; then
		warn "$pass/$sys round $r: dnsperf failed: $(tail -n 3 "$out" | tr '\n' ' ') (see $out)"
		return 1
	fi
	load_end "$pass" "$sys" "$r"
	proxy_ok "$sys" || return 1
	qps=$(dp_stat "$out" "Queries per second")
	sent=$(dp_stat "$out" "Queries sent")
	lost=$(dp_stat "$out" "Queries lost")
	avg=$(dp_stat "$out" "Average Latency (s)")
	sd=$(dp_stat "$out" "Latency StdDev (s)")
	if [[ -z $qps || -z $sent || $sent == 0 || -z $lost ]]; then
		warn "$pass/$sys round $r: no statistics in dnsperf output (see $out)"
		return 1
	fi
	other=$(rcodes "$out")
	[[ -z $other ]] || warn "$pass/$sys round $r: answers other than NOERROR: $other (see $out)"
	[[ $lost == 0 ]] || warn "$pass/$sys round $r: $lost of $sent queries lost (see $out)"
	qps=$(awk -v v="$qps" 'BEGIN{printf "%.0f", v}')
	if [[ $pass == cap ]]; then
		add_val cap "$sys" "$qps"
		add_val cap_lost "$sys" "$lost"
		add_val cap_sent "$sys" "$sent"
		ROWS_CAP+=("| $(sysname "$sys") | $r | $qps | $lost / $sent | $L_CPU | $L_OTHER | $L_CORE0 |")
		log "  cap $sys at ${CAP_PCT}% of a core: $qps queries/s, $lost of $sent lost (proxy CPU ${L_CPU}%)"
		return 0
	fi
	add_val qps "$sys" "$qps"
	add_val lost "$sys" "$lost"
	add_val sent "$sys" "$sent"
	add_val avg "$sys" "$(awk -v v="${avg:-}" 'BEGIN{if (v == "") exit; printf "%.3f", v * 1000}')"
	add_val sd "$sys" "$(awk -v v="${sd:-}" 'BEGIN{if (v == "") exit; printf "%.3f", v * 1000}')"
	ROWS_QPS+=("| $(sysname "$sys") | $r | $qps | $lost / $sent | $(awk -v v="${avg:-}" 'BEGIN{if (v == "") {print "–"; exit}; printf "%.3f", v * 1000}') | $(awk -v v="${sd:-}" 'BEGIN{if (v == "") {print "–"; exit}; printf "%.3f", v * 1000}') | $L_CPU | $L_OTHER | $L_OTHER0 | $L_CORE0 |")
	log "  qps $sys: $qps queries/s, $lost of $sent lost, average $(awk -v v="${avg:-0}" 'BEGIN{printf "%.3f", v*1000}') ms"
}

# measure_lat SYSTEM ROUND: dnsperf at LAT_QPS, every query's latency logged.
measure_lat() {
	local sys=$1 r=$2 port out qps sent lost p50 p99 p999
	port=$(front_port "$sys")
	out=$WORK/raw/lat-$sys-r$r.txt
	local cmd=(taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$QUERIES" -l "$LAT_SECS"
		-c "$DNS_CLIENTS" -T 1 -q "$DNS_OUTSTANDING" -Q "$LAT_QPS" -v)
	set_cmd lat "$sys" "${cmd[*]}"
	load_begin
	if ! timeout $((LAT_SECS + 30)) "${cmd[@]}" >"$out" 2>&1; then
		warn "lat/$sys round $r: dnsperf failed: $(tail -n 3 "$out" | tr '\n' ' ') (see $out)"
		return 1
	fi
	load_end lat "$sys" "$r"
	proxy_ok "$sys" || return 1
	qps=$(dp_stat "$out" "Queries per second")
	sent=$(dp_stat "$out" "Queries sent")
	lost=$(dp_stat "$out" "Queries lost")
	if [[ -z $qps || -z $sent || $sent == 0 || -z $lost ]]; then
		warn "lat/$sys round $r: no statistics in dnsperf output (see $out)"
		return 1
	fi
	# -v prints "> RCODE NAME TYPE SECONDS" per answered query.
	read -r p50 p99 p999 < <(awk '$1 == ">" && $2 != "T" && $NF ~ /^[0-9.]+$/ {print $NF}' "$out" | sort -g |
		awk '{v[NR] = $1} END {
			if (NR == 0) { print "", "", ""; exit }
			split("0.5 0.99 0.999", q, " ")
			for (i = 1; i <= 3; i++) { k = int(q[i] * NR + 0.999999); if (k < 1) k = 1; if (k > NR) k = NR; printf "%.3f ", v[k] * 1000 }
			print ""
		}') || true
	gzip -f "$out"
	if [[ -z ${p99:-} ]]; then
		warn "lat/$sys round $r: no per-query latencies in dnsperf -v output (see $out.gz)"
		return 1
	fi
	[[ $lost == 0 ]] || warn "lat/$sys round $r: $lost of $sent queries lost at $LAT_QPS queries/s (see $out.gz)"
	if awk -v q="$qps" -v t="$LAT_QPS" 'BEGIN{exit !(q < 0.95 * t)}'; then
		warn "lat/$sys round $r: only $(printf '%.0f' "$qps") of the $LAT_QPS queries/s asked for were answered, so its latency is that of an overloaded path"
	fi
	add_val p50 "$sys" "$p50"
	add_val p99 "$sys" "$p99"
	add_val p999 "$sys" "$p999"
	add_val lat_lost "$sys" "$lost"
	add_val lat_sent "$sys" "$sent"
	ROWS_LAT+=("| $(sysname "$sys") | $r | $(printf '%.0f' "$qps") | $p50 | $p99 | $p999 | $lost / $sent | $L_CPU | $L_OTHER | $L_OTHER0 | $L_CORE0 |")
	log "  lat $sys at $LAT_QPS q/s: p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms, $lost of $sent lost"
}

# run_one SYSTEM ROUND: both passes on a freshly started proxy.
run_one() {
	local sys=$1 r=$2
	if ! start_proxy "$sys"; then
		if [[ $sys == lbd ]]; then
			LBD_SKIP_REASON="lbd did not start or did not answer (see $PROXY_LOG)"
			warn "$LBD_SKIP_REASON; skipping lbd for the rest of the run"
			drop_system lbd
		else
			warn "$sys did not start or did not answer in round $r (see $PROXY_LOG)"
		fi
		return 0
	fi
	quiet_check "qps/$sys round $r"
	measure_qps "$sys" "$r" || true
	if [[ $LAT_QPS -gt 0 ]] && { [[ $sys == direct ]] || alive "$PROXY_PID"; }; then
		sleep 1
		quiet_check "lat/$sys round $r"
		measure_lat "$sys" "$r" || true
	fi
	if [[ $CAP_PCT -gt 0 && $sys != direct ]] && alive "$PROXY_PID"; then
		cap_enter "$PROXY_PID"
		sleep 1
		quiet_check "cap/$sys round $r"
		measure_qps "$sys" "$r" cap || true
	fi
	stop_proxy
	sleep "$COOLDOWN"
}

# ------------------------------------------------------------------- checks

if has_system lbd; then
	if [[ ! -x $LBD ]]; then
		LBD_SKIP_REASON="$LBD not found or not executable (run make build)"
		warn "$LBD_SKIP_REASON; skipping lbd"
		drop_system lbd
	elif ! "$LBD" check -c "$WORK/conf/lbd-udp.toml" >"$WORK/raw/lbd-check.log" 2>&1; then
		LBD_SKIP_REASON="\`$LBD check\` rejects the UDP config: $(sed "s|$WORK/conf/||" "$WORK/raw/lbd-check.log" | head -c 400 | paste -sd ';' | sed 's/;/; /g')"
		warn "$LBD_SKIP_REASON; skipping lbd"
		drop_system lbd
	fi
fi
if has_system nginx; then
	nginx -t -p "$WORK/nginx-udp/" -e "$WORK/nginx-udp/logs/error.log" -c "$WORK/conf/nginx-udp.conf" \
		>"$WORK/raw/nginx-udp-test.log" 2>&1 || {
		warn "nginx udp config rejected, skipping nginx: $(tail -n 2 "$WORK/raw/nginx-udp-test.log" | tr '\n' ' ')"
		drop_system nginx
	}
fi
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "no system left to measure"
SYSTEMS_RUN=("${SYS_LIST[@]}")

# --------------------------------------------------------------------- run

start_dnsmasq
cap_setup

log "systems: ${SYS_LIST[*]}; rounds: $ROUNDS; throughput ${DNS_SECS}s, latency ${LAT_SECS}s at $LAT_QPS q/s"
log "raw outputs: ${WORK#"$ROOT"/}"

for ((r = 1; r <= ROUNDS; r++)); do
	log "round $r of $ROUNDS"
	for sys in "${SYS_LIST[@]}"; do
		run_one "$sys" "$r"
	done
	alive "$DNSMASQ_PID" || die "dnsmasq exited, see $WORK/raw/dnsmasq.log"
done

# ------------------------------------------------------------------ report

sum() { awk '{for (i = 1; i <= NF; i++) s += $i} END{if (NF || NR) printf "%d", s}' <<<"$1"; }
# fmt_num METRIC VALUE
fmt_num() {
	[[ -z $2 ]] && {
		echo "–"
		return
	}
	case $1 in
	qps | cap) awk -v v="$2" 'BEGIN{printf "%.1fk", v/1000}' ;;
	lost | lat_lost | cap_lost) echo "$2" ;;
	*) awk -v v="$2" 'BEGIN{printf "%.3f", v}' ;;
	esac
}

METRICS=(qps lost avg)
if [[ $LAT_QPS -gt 0 ]]; then METRICS+=(p50 p99 p999 lat_lost); fi
if [[ $CAP_PCT -gt 0 ]]; then METRICS+=(cap cap_lost); fi

declare -A LABEL=(
	[qps]="queries/s, dnsperf -c $DNS_CLIENTS -q $DNS_OUTSTANDING${QPS_LIMIT:+ -Q $QPS_LIMIT}, ${DNS_SECS} s"
	[lost]="queries lost in that pass, all rounds"
	[avg]="average latency in that pass (ms)"
	[p50]="p50 latency at $LAT_QPS queries/s (ms)"
	[p99]="p99 latency at $LAT_QPS queries/s (ms)"
	[p999]="p99.9 latency at $LAT_QPS queries/s (ms)"
	[lat_lost]="queries lost at $LAT_QPS queries/s, all rounds"
	[cap]="queries/s, the proxy held to $CAP_PCT% of a core (capped pass)"
	[cap_lost]="queries lost in the capped pass, all rounds"
)
declare -A MED
for m in qps avg sd p50 p99 p999 cap; do
	for s in direct nginx lbd; do MED[$m|$s]=$(median "${VAL[$m|$s]:-}"); done
done
for m in lost sent lat_lost lat_sent cap_lost cap_sent; do
	for s in direct nginx lbd; do MED[$m|$s]=$(sum "${VAL[$m|$s]:-}"); done
done

# version_of TOOL: its version, or "?"; never fails.
version_of() {
	local v=""
	case $1 in
	nginx) v=$(nginx -v 2>&1 | sed -n 's|.*nginx/||p') || true ;;
	lbd) v=$("$LBD" version 2>/dev/null | head -n 1) || true ;;
	dnsperf) v=$(dnsperf -h 2>&1 | awk '/^Version/ {print $2; exit}') || true ;;
	dnsmasq) v=$(dnsmasq --version 2>/dev/null | awk 'NR == 1 {print $3}') || true ;;
	esac
	echo "${v:-?}"
} 2>/dev/null

relpath() { sed "s|$WORK/conf/||g; s|$ROOT/||g"; }

# met VALUE OP LIMIT: "met" or "**not met**".
met() {
	if awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN{exit !((op == ">=") ? v >= t : v <= t)}'; then
		echo "met"
	else
		echo "**not met**"
	fi
}

write_report() {
	local md=$1 m s cols=() v hdr sep line r_n r_d r_nd mm
	for s in direct haproxy nginx lbd; do
		if [[ $s == haproxy ]]; then
			[[ $SHOW_HAPROXY == 1 ]] && cols+=(haproxy)
		elif has_system "$s" || [[ -n ${VAL[qps|$s]:-} ]] || [[ $s == lbd && -n $LBD_SKIP_REASON ]]; then
			cols+=("$s")
		fi
	done
	{
		echo "# lbd UDP benchmark: DNS through the proxy"
		echo
		echo "Written by \`bench/udp.sh\` (\`bench/run.sh udp\`, part of \`make bench\`) on $(date -u '+%Y-%m-%d %H:%M UTC')."
		echo
		echo "- Host: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(nproc --all) CPUs, kernel $(uname -r)"
		echo "- Versions: nginx $(version_of nginx), lbd $(
			if [[ -x $LBD ]]; then version_of lbd; else echo 'not built'; fi
		), dnsperf $(version_of dnsperf), dnsmasq $(version_of dnsmasq)"
		echo "- Backend: dnsmasq on 127.0.0.1:$B_DNS, answering every name under \`$ZONE\` with $ANSWER itself (\`--address\`); no resolv.conf, no hosts file, no upstream server, so nothing leaves 127.0.0.1. Client: dnsperf, A queries for h1..h$NAMES.$ZONE in turn."
		echo "- Each proxy runs alone on CPU $PROXY_CPU (\`taskset -c $PROXY_CPU\`), freshly started for every round; dnsperf and dnsmasq share CPU $CLIENT_CPU. HAProxy's open-source edition has no UDP."
		echo "- Systems in run order: ${SYSTEMS_RUN[*]}; $ROUNDS round(s), systems interleaved within each round; the table shows the median (lost queries: the sum)."
		echo "- Throughput pass: dnsperf as fast as it goes for ${DNS_SECS} s. Latency pass$(
			[[ $LAT_QPS -gt 0 ]] && echo ": dnsperf held at $LAT_QPS queries/s for ${LAT_SECS} s with \`-v\`, percentiles over every answered query." || echo ": skipped (LAT_QPS=0)."
		)"
		echo "- Run-to-run spread on this kind of machine is 10–20%: compare only within one run."
		[[ -n $LBD_SKIP_REASON ]] && echo "- **lbd was skipped:** $(relpath <<<"$LBD_SKIP_REASON")."
		echo
		hdr="| metric |"
		sep="|---|"
		for s in "${cols[@]}"; do
			hdr+=" $(sysname "$s") |"
			sep+="---:|"
		done
		hdr+=" nginx/direct | lbd/nginx | lbd/direct |"
		sep+="---:|---:|---:|"
		echo "$hdr"
		echo "$sep"
		for m in "${METRICS[@]}"; do
			line="| ${LABEL[$m]} |"
			for s in "${cols[@]}"; do
				if [[ $s == haproxy ]]; then
					line+=" no UDP |"
				elif [[ $s == direct && ($m == cap || $m == cap_lost) ]]; then
					line+=" n/a |"
				elif [[ -z ${VAL[qps|$s]:-} ]]; then
					line+=" – |"
				else
					line+=" $(fmt_num "$m" "${MED[$m|$s]}") |"
				fi
			done
			if [[ $m == lost || $m == lat_lost || $m == cap_lost ]]; then
				line+=" | | |"
			else
				r_nd=$(ratio "${MED[$m|nginx]}" "${MED[$m|direct]}")
				r_n=$(ratio "${MED[$m|lbd]}" "${MED[$m|nginx]}")
				r_d=$(ratio "${MED[$m|lbd]}" "${MED[$m|direct]}")
				line+=" ${r_nd:-–} | ${r_n:-–} | ${r_d:-–} |"
			fi
			echo "$line"
		done
		echo
		echo "Higher is better for queries/s, lower for the rest. Through a proxy dnsperf and dnsmasq keep CPU $CLIENT_CPU and the proxy adds CPU $PROXY_CPU; the direct path has CPU $CLIENT_CPU alone, so in the throughput pass no proxy can beat the direct figure, and CPU $CLIENT_CPU, not the proxy, may be what stops it.$(
			[[ $CAP_PCT -gt 0 ]] && echo " In the capped pass each proxy runs under a cgroup CPU quota of $CAP_PCT% of one core (10 ms periods); CPU $CLIENT_CPU then has room to spare, so that pass compares the proxies' own work per unit of CPU."
		)"
		echo
		echo "## Targets"
		echo
		echo "| target | measured | |"
		echo "|---|---|---|"
		local q_l=${MED[qps|lbd]:-} q_n=${MED[qps|nginx]:-} q_d=${MED[qps|direct]:-} lost_l
		if [[ -z ${VAL[qps|lbd]:-} ]]; then
			local why="lbd not measured${LBD_SKIP_REASON:+: $(relpath <<<"$LBD_SKIP_REASON")}"
			echo "| lbd queries/s ≥ 2 × nginx | – | $why |"
			echo "| lbd queries/s ≥ 0.8 × direct | – | not measured |"
			echo "| no queries lost through lbd | – | not measured |"
		else
			r_n=$(ratio "$q_l" "$q_n")
			r_d=$(ratio "$q_l" "$q_d")
			echo "| lbd queries/s ≥ 2 × nginx | ${r_n:-–} × | $([[ -n $r_n ]] && met "$r_n" ">=" 2 || echo "nginx not measured") |"
			echo "| lbd queries/s ≥ 0.8 × direct | ${r_d:-–} × | $([[ -n $r_d ]] && met "$r_d" ">=" 0.8 || echo "direct not measured") |"
			if [[ $CAP_PCT -gt 0 ]]; then
				local r_c
				r_c=$(ratio "${MED[cap|lbd]:-}" "${MED[cap|nginx]:-}")
				echo "| lbd queries/s ≥ 2 × nginx, both held to $CAP_PCT% of a core (capped pass) | ${r_c:-–} × | $([[ -n $r_c ]] && met "$r_c" ">=" 2 || echo "not measured") |"
			fi
			lost_l=$((${MED[lost|lbd]:-0} + ${MED[lat_lost|lbd]:-0} + ${MED[cap_lost|lbd]:-0}))
			echo "| no queries lost through lbd | $lost_l of $((${MED[sent|lbd]:-0} + ${MED[lat_sent|lbd]:-0} + ${MED[cap_sent|lbd]:-0})) lost | $(met "$lost_l" "<=" 0) |"
		fi
		echo
		echo "## Every round"
		echo
		echo "Throughput pass:"
		echo
		echo "| system | round | queries/s | lost / sent | average ms | stddev ms | proxy CPU % | others on CPU $PROXY_CPU % | others on CPU $CLIENT_CPU % | CPU $CLIENT_CPU busy % |"
		echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
		for v in "${ROWS_QPS[@]}"; do echo "$v"; done
		if [[ $LAT_QPS -gt 0 ]]; then
			echo
			echo "Latency pass, $LAT_QPS queries/s asked for:"
			echo
			echo "| system | round | answered/s | p50 ms | p99 ms | p99.9 ms | lost / sent | proxy CPU % | others on CPU $PROXY_CPU % | others on CPU $CLIENT_CPU % | CPU $CLIENT_CPU busy % |"
			echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
			for v in "${ROWS_LAT[@]}"; do echo "$v"; done
		fi
		if [[ $CAP_PCT -gt 0 ]]; then
			echo
			echo "Capped pass, each proxy held to $CAP_PCT% of one core:"
			echo
			echo "| system | round | queries/s | lost / sent | proxy CPU % | others on CPU $PROXY_CPU % | CPU $CLIENT_CPU busy % |"
			echo "|---|---:|---:|---:|---:|---:|---:|"
			for v in "${ROWS_CAP[@]}"; do echo "$v"; done
		fi
		echo
		echo "Proxy CPU % is the proxy's user+system CPU time over the load's duration (100 = its whole core); \"others on CPU $PROXY_CPU\" is the user+system time of every other process on the proxy's core and \"others on CPU $CLIENT_CPU\" that of every process but dnsperf and dnsmasq on theirs, both of which should be near 0; CPU $CLIENT_CPU busy % is everything on CPU $CLIENT_CPU, softirq included (100 = saturated)."
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
		echo "# queries.txt: $NAMES lines, \"h1.$ZONE A\" .. \"h$NAMES.$ZONE A\""
		echo "# backend (CPU $CLIENT_CPU)"
		echo "taskset -c $CLIENT_CPU dnsmasq ${DNSMASQ_ARGS[*]}" | relpath
		echo "# proxies (CPU $PROXY_CPU), one fresh process per round"
		for s in "${cols[@]}"; do
			[[ $s == direct || $s == haproxy ]] && continue
			echo "${PROXY_CMD[$s]}   # $(sysname "$s")" | relpath
		done
		echo "# clients (CPU $CLIENT_CPU)"
		for m in qps lat cap; do
			for s in "${cols[@]}"; do
				[[ -n ${CMDLINE[$m|$s]:-} ]] && echo "${CMDLINE[$m|$s]}   # $(sysname "$s"), $(case $m in qps) echo throughput ;; lat) echo latency ;; cap) echo "capped at $CAP_PCT% (cgroup $CAP_KIND cpu quota)" ;; esac)" | relpath
			done
		done
		echo '```'
		echo
		echo "## Configurations"
		for s in "${cols[@]}"; do
			case $s in
			nginx) v=nginx-udp.conf ;;
			lbd) v=lbd-udp.toml ;;
			*) continue ;;
			esac
			echo
			echo "\`$v\`:"
			echo
			echo '```'
			relpath <"$WORK/conf/$v"
			echo '```'
		done
	} >"$md"
}

color_of() {
	case $1 in direct) echo '0x4d4d4d' ;; nginx) echo '0x2ca25f' ;; lbd) echo '0x2b6cb0' ;; *) echo '0x000000' ;; esac
}

# write_plot PNG: median queries/s per system with the min–max of the rounds,
# and the two throughput targets as dashed lines.
write_plot() {
	local png=$1 dat=$WORK/udp-qps.dat gp=$WORK/udp.gp s n=0 mm top=0 y extra=""
	{
		for s in direct nginx lbd; do
			[[ -n ${VAL[qps|$s]:-} ]] || continue
			mm=$(minmax "${VAL[qps|$s]}")
			echo "$n \"$(sysname "$s")\" $(awk -v m="${MED[qps|$s]}" -v r="$mm" 'BEGIN{split(r, a, " "); printf "%.2f %.2f %.2f", m/1000, a[1]/1000, a[2]/1000}') $(color_of "$s")"
			top=$(awk -v t="$top" -v r="$mm" 'BEGIN{split(r, a, " "); v = a[2] / 1000; print (v > t) ? v : t}')
			n=$((n + 1))
		done
	} >"$dat"
	[[ $n -gt 0 ]] || return 0
	local keys=""
	# target LABEL Y COLOUR DASH: a dashed line across the plot at Y, named
	# in the key below the plot.
	target() {
		extra+="set arrow from graph 0, first $2 to graph 1, first $2 nohead front dt $4 lw 1.5 lc rgb '$3'"$'\n'
		keys+=", NaN with lines dt $4 lw 1.5 lc rgb '$3' title '$1 ($(printf '%.1fk' "$2"))'"
		top=$(awk -v t="$top" -v v="$2" 'BEGIN{print (v > t) ? v : t}')
	}
	if [[ -n ${MED[qps|direct]:-} ]]; then
		target "target for lbd: 0.8 × direct" "$(awk -v v="${MED[qps|direct]}" 'BEGIN{printf "%.2f", 0.8*v/1000}')" '#4d4d4d' 2
	fi
	if [[ -n ${MED[qps|nginx]:-} ]]; then
		target "target for lbd: 2 × nginx" "$(awk -v v="${MED[qps|nginx]}" 'BEGIN{printf "%.2f", 2*v/1000}')" '#2ca25f' 3
	fi
	local slots=$n
	if [[ -z ${VAL[qps|lbd]:-} && -n $LBD_SKIP_REASON ]]; then
		# An empty slot for lbd, so that its absence shows.
		extra+="set xtics format ''"$'\n'
		extra+="set xtics add ('lbd' $n)"$'\n'
		extra+="set label 'not measured' at first $n, graph 0.05 center front font ',10' tc rgb '#2b6cb0'"$'\n'
		slots=$((n + 1))
	fi
	y=$(awk -v t="$top" 'BEGIN{printf "%.0f", t * 1.15 + 1}')
	local term="pngcairo size 800,560 font ',11'"
	gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 || term="png size 800,560"
	{
		echo "set terminal $term"
		echo "set output '$png'"
		printf 'set title "DNS over UDP: dnsperf → dnsmasq, proxy on one core (%s)\\nmedian of %s round(s), whiskers: min–max; higher is better"\n' "$(date -u +%Y-%m-%d)" "$ROUNDS"
		echo "set style fill solid 0.85 border -1"
		echo "set boxwidth 0.6"
		echo "set ylabel 'thousand queries/s'"
		echo "set yrange [0:$y]"
		echo "set xrange [-0.6:$((slots - 1)).6]"
		echo "set grid ytics"
		echo "set key below"
		printf '%s' "$extra"
		printf "plot '%s' using 1:3:6:xtic(2) with boxes lc rgb variable notitle, " "$dat"
		printf "'' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 7 ps 0.4 notitle, "
		printf "'' using 1:5:(sprintf('%%.1fk', \$3)) with labels offset 0,0.8 font ',10' notitle"
		printf '%s\n' "$keys"
	} >"$gp"
	if gnuplot "$gp" >"$WORK/gnuplot.log" 2>&1; then
		log "plot: ${png#"$ROOT"/}"
	else
		warn "gnuplot failed, see $WORK/gnuplot.log"
	fi
}

mkdir -p "$RESULTS_DIR"
if command -v gnuplot >/dev/null; then
	write_plot "$(cd "$RESULTS_DIR" && pwd)/udp.png"
fi
write_report "$RESULTS_DIR/udp.md"
cp "$RESULTS_DIR/udp.md" "$WORK/udp.md"
log "table: $RESULTS_DIR/udp.md"
echo
awk '/^\| metric \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/udp.md"
echo
awk '/^\| target \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/udp.md"
