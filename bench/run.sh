#!/usr/bin/env bash
# lbd against HAProxy and nginx, each proxy alone on one core, with the
# no-proxy path as a baseline. `make bench` runs this script with no
# argument: every workload, TCP then UDP then HTTP.
#
# Usage: bench/run.sh [tcp | bulk conn rr idle] [udp] [http | plain fwd jwt] [--help]
#
#   bulk conn rr idle  layer-4 TCP (bench/workloads/tcp.sh; tcp: all four):
#                      writes tcp.md and tcp.png
#   udp                DNS over UDP (bench/workloads/udp.sh, also bench/udp.sh):
#                      writes udp.md and udp.png
#   plain fwd jwt      layer-7 HTTP (bench/workloads/http.sh, also bench/http.sh;
#                      http: all three): writes http.md and http.png
#
# Environment, for every workload (defaults in brackets):
#   SYSTEMS      systems to compare, in run order ["direct haproxy nginx lbd"]
#   ROUNDS       rounds per measurement; the tables show the median [3]
#   DURATION     seconds per load: sets BULK_SECS, WRK_SECS, DNS_SECS, LAT_SECS
#   COOLDOWN     seconds of rest between measurements [2]
#   PORT_BASE    first of the 127.0.0.1 ports used, PORT_BASE+1..+36 [19200]
#   LBD          lbd binary [./bin/lbd]
#   RESULTS_DIR  where the .md and .png files go [bench/results]
#   NO_INSTALL=1 never run apt-get
# Each workload's own settings follow (bench/run.sh --help lists them all).
#
# Every proxy runs alone on CPU 1 (taskset), freshly started for every
# measurement; clients and backends run on CPU 0. Before each load the
# machine is checked to be quiet, and during it CPU 1 to be the proxy's
# alone; the report flags figures taken otherwise. Traffic stays on
# 127.0.0.1, every load stops by itself, and everything started here is
# stopped on exit. Raw outputs go to bench/work/<timestamp>/<workload>/;
# bench/work/<timestamp>/results.tsv and meta.tsv are what bench/report
# turns into the tables and plots.
set -Eeuo pipefail
trap 'log "ERROR: status $? at line $LINENO: $BASH_COMMAND"' ERR

PATH=$PATH:/usr/sbin:/sbin # nginx, haproxy and dnsmasq live there
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SYSTEMS=${SYSTEMS:-"direct haproxy nginx lbd"}
ROUNDS=${ROUNDS:-3}
COOLDOWN=${COOLDOWN:-2}
PORT_BASE=${PORT_BASE:-19200}
LBD=${LBD:-./bin/lbd}
RESULTS_DIR=${RESULTS_DIR:-bench/results}
NO_INSTALL=${NO_INSTALL:-0}

PROXY_CPU=1
CLIENT_CPU=0
W='*' # the workload running; "*" before and between them

log() {
	local w=-$W
	[[ $W == '*' ]] && w=
	printf '[bench%s %s] %s\n' "$w" "$(date +%T)" "$*" >&2
}
warn() {
	log "WARNING: $*"
	meta note "$*"
}
die() {
	log "ERROR: $*"
	exit 1
}

# A workload W is bench/workloads/W.sh, which defines these functions and
# nothing that runs on its own; this script calls them in this order:
#   W_settings          read and check its settings (before anything starts)
#   W_packages          print the apt packages it lacks
#   W_tools             print the commands it needs
#   W_prepare           ports and anything to decide before the configs; may
#                       drop systems (drop_system) or mark them absent (meta)
#   W_ports             print "tcp PORT" or "udp PORT" for each port it uses
#   W_configs           write its configurations to $WDIR/conf, list them
#                       (meta conf) with its settings (meta set) and steps
#   W_check             check the configurations (lbd_check, check_nginx,
#                       check_haproxy), which drop the systems they reject
#   W_proxy SYS         set PROXY_ARGV (and PROXY_ENV) to run SYS's proxy
#   W_backends          start its backends on CPU 0 (start_backend)
#   W_plan              print "STEP ROUND" lines, the order of measurements;
#                       each line is measured on every system in turn:
#   W_runs STEP SYS     whether SYS is measured in STEP
#   W_port SYS STEP     print "tcp PORT" or "udp PORT": the proxy is ready
#                       when it is bound there
#   W_probe SYS STEP PORT  (optional) and when this succeeds
#   W_measure STEP SYS ROUND  measure on the fresh proxy (load, emit)
#   W_finish            (optional) after the last measurement
WORKLOAD_FILES=(tcp udp http)
for w in "${WORKLOAD_FILES[@]}"; do
	# shellcheck source=/dev/null
	. "$ROOT/bench/workloads/$w.sh"
done

# ---------------------------------------------------------------- arguments

TCP_PARTS=()
HTTP_MODES=()
RUN=()
HELP=0
want() { [[ " ${RUN[*]} " == *" $1 "* ]] || RUN+=("$1"); }
for arg in "$@"; do
	case $arg in
	bulk | conn | rr | idle) TCP_PARTS+=("$arg") ;;
	tcp) TCP_PARTS+=(bulk conn rr idle) ;;
	udp) want udp ;;
	plain | fwd | jwt) HTTP_MODES+=("$arg") ;;
	http) want http ;;
	all) TCP_PARTS+=(bulk conn rr idle) && want udp && want http ;;
	-h | --help) HELP=1 ;;
	*) die "unknown workload '$arg' (expected: tcp bulk conn rr idle udp http plain fwd jwt)" ;;
	esac
done
[[ ${#TCP_PARTS[@]} -gt 0 ]] && RUN=(tcp "${RUN[@]}")
[[ ${#HTTP_MODES[@]} -gt 0 ]] && want http
if [[ ${#RUN[@]} == 0 ]]; then
	if [[ $HELP == 1 ]]; then RUN=(tcp udp http); else
		TCP_PARTS=(bulk conn rr idle)
		RUN=(tcp udp http)
	fi
fi
# In the order TCP, UDP, HTTP, whatever the order of the arguments.
ORDER=()
for w in "${WORKLOAD_FILES[@]}"; do [[ " ${RUN[*]} " == *" $w "* ]] && ORDER+=("$w"); done
RUN=("${ORDER[@]}")

if [[ $HELP == 1 ]]; then
	sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
	for w in "${RUN[@]}"; do
		echo
		sed -n '1,/^[^#]/p' "$ROOT/bench/workloads/$w.sh" | sed '$d; /^# Sourced by/d; s/^# \{0,1\}//'
	done
	exit 0
fi

# need_int VAR [0]: VAR must be a positive integer (or 0, with "0").
need_int() {
	[[ ${!1} =~ ^[0-9]+$ ]] && { [[ ${!1} -gt 0 ]] || [[ ${2:-} == 0 ]]; } ||
		die "$1 must be a positive integer, got '${!1}'"
}
for v in ROUNDS PORT_BASE; do need_int "$v"; done
need_int COOLDOWN 0
read -r -a SYS_LIST <<<"$SYSTEMS"
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "SYSTEMS is empty"
for s in "${SYS_LIST[@]}"; do
	case $s in
	direct | haproxy | nginx | lbd) ;;
	*) die "unknown system '$s' in SYSTEMS (expected: direct haproxy nginx lbd)" ;;
	esac
done
for w in "${RUN[@]}"; do "${w}_settings"; done

# ------------------------------------------------------------ system lists

has_system() {
	local s
	for s in "${SYS_LIST[@]}"; do [[ $s == "$1" ]] && return 0; done
	return 1
}

drop_system() {
	local s keep=()
	for s in "${SYS_LIST[@]}"; do [[ $s == "$1" ]] || keep+=("$s"); done
	SYS_LIST=("${keep[@]}")
}

# -------------------------------------------------------------------- setup

[[ $(nproc --all) -ge 2 ]] || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, load on CPU $CLIENT_CPU)"
mkdir -p bench/work
exec 9>bench/work/.lock
flock -n 9 || die "another bench run is going on (bench/work/.lock)"

STAMP=$(date +%Y%m%d-%H%M%S)
WORK=$ROOT/bench/work/$STAMP
mkdir -p "$WORK"
ln -sfn "$STAMP" bench/work/latest
TMP=$(mktemp -d /tmp/lbd-bench.XXXXXX)
printf '# workload\tstep\tsystem\tround\tmetric\tvalue\n' >"$WORK/results.tsv"
printf '# workload\tkey\tfield...\n' >"$WORK/meta.tsv"

# emit STEP SYSTEM ROUND METRIC VALUE: one measured value.
emit() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$W" "$1" "$2" "$3" "$4" "$5" >>"$WORK/results.tsv"; }

# meta KEY FIELD...: one line of what the report shows besides the values.
meta() {
	local a line=$W
	for a in "$@"; do
		a=${a//$'\t'/ }
		line+=$'\t'${a//$'\n'/ }
	done
	printf '%s\n' "$line" >>"$WORK/meta.tsv"
}

# --------------------------------------------------------- process handling

STARTED=()     # every process started here and not yet stopped
CLEANUP=()     # functions the workloads want run on exit
BACKEND_PIDS=() # the workload's backends: CPU 0 time not counted as others'
LAST_PID=
PROXY_PID=
PROXY_LOG=
PROXY_SEQ=0

# start_bg LOGFILE CMD...: run CMD in the background; its pid is in LAST_PID.
start_bg() {
	local logf=$1
	shift
	"$@" >"$logf" 2>&1 </dev/null &
	LAST_PID=$!
	STARTED+=("$LAST_PID")
}

descendants() {
	local c
	for c in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
		descendants "$c"
		echo "$c"
	done
}

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

# forget PID: drop a stopped process from STARTED so that the exit trap
# never signals a later process that reuses its pid.
forget() {
	local p keep=()
	for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	STARTED=("${keep[@]}")
}

# stop_pid PID: SIGTERM the process and its descendants, SIGKILL after 5 s.
stop_pid() {
	local pid=$1 all i p any
	if ! alive "$pid"; then
		wait "$pid" 2>/dev/null || true
		forget "$pid"
		return 0
	fi
	# shellcheck disable=SC2207
	all=($(descendants "$pid") "$pid")
	kill -TERM "${all[@]}" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		any=0
		for p in "${all[@]}"; do alive "$p" && any=1; done
		[[ $any == 0 ]] && break
		sleep 0.1
	done
	kill -KILL "${all[@]}" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}

stop_all() {
	local pid
	for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
	BACKEND_PIDS=()
	PROXY_PID=
}

cleanup() {
	local rc=$? f
	trap - EXIT INT TERM
	stop_all
	for f in "${CLEANUP[@]}"; do "$f" || true; done
	rm -rf "$TMP"
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------- installation

stream_module() {
	local f
	for f in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
		[[ -f $f ]] && {
			echo "$f"
			return 0
		}
	done
	return 1
}

nginx_has_stream() {
	stream_module >/dev/null && return 0
	nginx -V 2>&1 | grep -Eq -- '--with-stream( |$)'
}

# stop_new_service NAME PIDS_BEFORE: stop a distro service that apt-get has
# just started, touching only processes that did not exist before.
stop_new_service() {
	local name=$1 before=" $2 " p new=()
	for p in $(pidof "$name" 2>/dev/null); do
		[[ $before == *" $p "* ]] || new+=("$p")
	done
	[[ ${#new[@]} -gt 0 ]] || return 0
	log "apt started the distro's $name service; stopping it"
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		systemctl stop "$name" >/dev/null 2>&1 || true
		systemctl disable "$name" >/dev/null 2>&1 || true
	elif command -v service >/dev/null; then
		service "$name" stop >/dev/null 2>&1 || true
	fi
	sleep 0.5
	for p in "${new[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
}

# apt_install PKG...: install the packages the workloads lack (nothing when
# none), with apt-get update only if a first try fails; stop any haproxy or
# nginx service that the install started, leaving processes that ran before.
apt_install() {
	[[ $# -gt 0 ]] || return 0
	[[ $NO_INSTALL == 1 ]] && die "missing packages and NO_INSTALL=1: $*"
	[[ $(id -u) == 0 ]] || die "missing packages, run as root or install them: apt-get install -y $*"
	log "installing: $*"
	local before_haproxy before_nginx
	before_haproxy=$(pidof haproxy 2>/dev/null || true)
	before_nginx=$(pidof nginx 2>/dev/null || true)
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y --no-install-recommends "$@" >"$WORK/apt.log" 2>&1; then
		log "apt-get install failed, running apt-get update first"
		apt-get update >>"$WORK/apt.log" 2>&1 || die "apt-get update failed, see $WORK/apt.log"
		apt-get install -y --no-install-recommends "$@" >>"$WORK/apt.log" 2>&1 ||
			die "apt-get install $* failed, see $WORK/apt.log"
	fi
	stop_new_service haproxy "$before_haproxy"
	stop_new_service nginx "$before_nginx"
}

# Each workload's <w>_packages prints the packages it lacks.
PKGS=()
command -v taskset >/dev/null || PKGS+=(util-linux)
command -v ss >/dev/null || PKGS+=(iproute2)
for w in "${RUN[@]}"; do
	for p in $("${w}_packages"); do [[ " ${PKGS[*]} " == *" $p "* ]] || PKGS+=("$p"); done
done
apt_install "${PKGS[@]}"
for t in taskset ss go; do command -v "$t" >/dev/null || die "$t not found"; done
for w in "${RUN[@]}"; do
	for t in $("${w}_tools"); do command -v "$t" >/dev/null || die "$t not found (needed by the $w workload)"; done
done

# The report tool, built before anything is measured so that a failure
# costs nothing.
REPORT=$WORK/report
GOWORK=off go build -o "$REPORT" ./bench/report >"$WORK/report-build.log" 2>&1 ||
	die "building bench/report failed, see $WORK/report-build.log"

# ---------------------------------------------------------- what is running

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
	dnsperf) v=$(dnsperf -h 2>&1 | awk '/^Version/ {print $2; exit}') || true ;;
	dnsmasq) v=$(dnsmasq --version 2>/dev/null | awk 'NR == 1 {print $3}') || true ;;
	esac
	echo "${v:-?}"
} 2>/dev/null

meta host "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(nproc --all) CPUs, kernel $(uname -r)"
meta proxy_cpu "$PROXY_CPU"
meta client_cpu "$CLIENT_CPU"
for t in haproxy nginx wrk iperf3 go dnsperf dnsmasq; do
	command -v "$t" >/dev/null && meta version "$t" "$(version_of "$t")"
done
if [[ -x $LBD ]]; then meta version lbd "$(version_of lbd)"; else meta lbd_built 0; fi
meta strip "$TMP/"
meta strip "$ROOT/"

# ------------------------------------------------------- ports and readiness

listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
udp_bound() { [[ -n $(ss -Huln "sport = :$1" 2>/dev/null) ]]; }

# wait_for CHECK PORT PID SECONDS: wait until `CHECK PORT` holds; fail early
# if PID dies.
wait_for() {
	local check=$1 port=$2 pid=$3 i
	for ((i = 0; i < $4 * 20; i++)); do
		"$check" "$port" && return 0
		alive "$pid" || return 1
		sleep 0.05
	done
	return 1
}
wait_listen() { wait_for listening "$@"; }
wait_udp() { wait_for udp_bound "$@"; }

# check_ports_free: every "tcp PORT" and "udp PORT" the workload's
# <w>_ports prints must be free.
check_ports_free() {
	local proto p busy=() nums=()
	while read -r proto p; do
		if [[ $proto == udp ]]; then udp_bound "$p" && busy+=("udp/$p") && nums+=("$p"); else
			listening "$p" && busy+=("tcp/$p") && nums+=("$p")
		fi
	done < <("${W}_ports")
	[[ ${#busy[@]} == 0 ]] && return 0
	ss -Htulnp | grep -E ":($(
		IFS='|'
		echo "${nums[*]}"
	))\b" >&2 || true
	die "ports already in use: ${busy[*]}; set PORT_BASE to a free range"
}

# ------------------------------------------------------------------ command lines

# show_cmd ARGS...: a command line for the report, quoting what needs it:
# in double quotes when nothing inside would expand, else in single quotes.
show_cmd() {
	local a out=() sq="'"
	for a in "$@"; do
		if [[ -n $a && ! $a =~ [[:space:]\;\"\$\'\(\)\&\|\<\>\*\?\`\\] ]]; then
			out+=("$a")
		elif [[ ! $a =~ [\"\$\`\\] ]]; then
			out+=("\"$a\"")
		else
			out+=("$sq${a//$sq/$sq\\$sq$sq}$sq")
		fi
	done
	echo "${out[*]}"
}

# nginx_argv DIR CONF: NGINX_ARGV is nginx in the foreground with its
# prefix, error log and pid file in DIR.
nginx_argv() { NGINX_ARGV=(nginx -p "$1/" -e "$1/logs/error.log" -c "$2" -g 'daemon off;'); }

# start_backend NAME LOGFILE CMD...: a backend on CPU 0, in the report's
# commands, its CPU time kept apart from other processes'.
start_backend() {
	local logf=$2
	meta backend "$1" "$(show_cmd taskset -c "$CLIENT_CPU" "${@:3}")"
	shift 2
	start_bg "$logf" taskset -c "$CLIENT_CPU" "$@"
	BACKEND_PIDS+=("$LAST_PID")
}

# ------------------------------------------------------------ config checks

# lbd_check CONF WHAT skip|note: `lbd check` on CONF; a rejection skips lbd
# (skip) or is only logged (note: check may lag behind run, and a failing
# start skips lbd anyway). A missing binary always skips it.
lbd_check() {
	has_system lbd || return 0
	if [[ ! -x $LBD ]]; then
		skip_lbd "$LBD not found or not executable (run make build)"
	elif ! "$LBD" check -c "$1" >"$WDIR/raw/lbd-check.log" 2>&1; then
		if [[ $3 == note ]]; then
			log "note: '$LBD check' did not accept the config: $(head -c 300 "$WDIR/raw/lbd-check.log")"
		else
			skip_lbd "\`$LBD check\` rejects the $2 config: $(sed "s|$WDIR/conf/||" "$WDIR/raw/lbd-check.log" | head -c 400 | paste -sd ';' | sed 's/;/; /g')"
		fi
	fi
}

# skip_lbd REASON: lbd is not measured any more in this workload.
skip_lbd() {
	LBD_SKIP_REASON=$1
	meta lbd_skip "$1"
	warn "$1; skipping lbd"
	drop_system lbd
}

# check_nginx LABEL DIR CONF: nginx -t on a proxy config; nginx is skipped
# when it is rejected.
check_nginx() {
	has_system nginx || return 0
	nginx_argv "$2" "$3"
	"${NGINX_ARGV[@]:0:7}" -t >"$WDIR/raw/nginx-$1-test.log" 2>&1 || {
		warn "nginx $1 config rejected, skipping nginx: $(tail -n 2 "$WDIR/raw/nginx-$1-test.log" | tr '\n' ' ')"
		drop_system nginx
	}
}

# check_haproxy CONF: haproxy -c; HAProxy is skipped when it is rejected.
check_haproxy() {
	has_system haproxy || return 0
	haproxy -c -f "$1" >"$WDIR/raw/haproxy-check.log" 2>&1 || {
		warn "HAProxy config rejected, skipping HAProxy: $(tail -n 2 "$WDIR/raw/haproxy-check.log" | tr '\n' ' ')"
		drop_system haproxy
	}
}

# ------------------------------------------------------------------ proxies

# start_proxy SYSTEM STEP: a fresh proxy on CPU 1 for one measurement,
# ready: bound to the port <w>_port gives and answering <w>_probe, if the
# workload has one. direct starts nothing.
start_proxy() {
	local sys=$1 step=$2 proto port
	PROXY_PID=
	[[ $sys == direct ]] && return 0
	PROXY_ENV=()
	"${W}_proxy" "$sys"
	read -r proto port < <("${W}_port" "$sys" "$step")
	PROXY_SEQ=$((PROXY_SEQ + 1))
	PROXY_LOG=$WDIR/raw/proxy-$PROXY_SEQ-$sys.log
	start_bg "$PROXY_LOG" env "${PROXY_ENV[@]}" taskset -c "$PROXY_CPU" "${PROXY_ARGV[@]}"
	PROXY_PID=$LAST_PID
	local check=listening
	[[ $proto == udp ]] && check=udp_bound
	if ! wait_for "$check" "$port" "$PROXY_PID" 10 ||
		{ declare -F "${W}_probe" >/dev/null && ! "${W}_probe" "$sys" "$step" "$port"; }; then
		log "$sys did not come up on $proto 127.0.0.1:$port; its output ($PROXY_LOG):"
		tail -n 20 "$PROXY_LOG" >&2 || true
		stop_pid "$PROXY_PID"
		PROXY_PID=
		return 1
	fi
	sleep 0.3 # let it finish starting before anything is measured
}

stop_proxy() {
	[[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
	PROXY_PID=
}

# proxy_ok SYSTEM: is the proxy still running after a measurement?
proxy_ok() {
	[[ $1 == direct ]] && return 0
	alive "$PROXY_PID" && return 0
	warn "$1 exited during the measurement, see $PROXY_LOG"
	return 1
}

# ------------------------------------------------------------- CPU accounting

CLK_TCK=$(getconf CLK_TCK)

# proc_sum PID FILE AWK: the sum over the process and its descendants of
# what AWK prints from /proc/PID/FILE; 0 without a PID (direct has none).
proc_sum() {
	local p sum=0 v
	[[ -n $1 ]] || {
		echo 0
		return
	}
	for p in "$1" $(descendants "$1"); do
		v=$(awk "$3" "/proc/$p/$2" 2>/dev/null || true)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# cpu_ticks PID: utime+stime of the process and its descendants.
cpu_ticks() { proc_sum "$1" stat '{print $14+$15}'; }

# rss_kb PID: VmRSS in kB, summed over the process and its descendants.
rss_kb() { proc_sum "$1" status '/^VmRSS:/{print $2}'; }

# backend_ticks: cpu_ticks summed over the workload's backends.
backend_ticks() {
	local p sum=0
	for p in "${BACKEND_PIDS[@]}"; do sum=$((sum + $(cpu_ticks "$p"))); done
	echo "$sum"
}

# core_ticks CPU [busy]: user+nice+system clock ticks of one CPU; with
# "busy", irq, softirq and steal time too.
core_ticks() {
	awk -v c="cpu$1" -v all="${2:-}" '$1 == c {print $2 + $3 + $4 + (all == "busy" ? $7 + $8 + $9 : 0)}' /proc/stat
}

# elapsed START: seconds since START, an earlier $EPOCHREALTIME.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b - a}'; }

# pct TICKS_BEFORE TICKS_AFTER SECONDS
pct() { awk -v a="$1" -v b="$2" -v s="$3" -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", (b-a)/hz/s*100}'; }

# cpu_pct PID SECS: the CPU the process and its descendants use over the
# next SECS seconds, in percent of one core.
cpu_pct() {
	local t0 t1
	t0=$(cpu_ticks "$1")
	sleep "$2"
	t1=$(cpu_ticks "$1")
	awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" -v s="$2" 'BEGIN{printf "%.3f", (b-a)*100/hz/s}'
}

# children_secs: CHILD_SECS = user+system seconds of this shell's reaped
# children so far (a load runs in the foreground, so its time lands here
# when it exits). Never call it in $(...): a subshell has children of its own.
children_secs() {
	times >"$TMP/times"
	CHILD_SECS=$(awk 'NR == 2 {
		t = 0
		for (i = 1; i <= 2; i++) { split($i, a, "m"); sub(/s$/, "", a[2]); t += a[1] * 60 + a[2] }
		printf "%.3f", t
	}' "$TMP/times")
}

# quiet_check WHAT: warn when the machine is busy right before a measurement.
quiet_check() {
	local a0 a1 b0 b1 u0 u1 w0 secs
	a0=$(core_ticks 0 busy)
	a1=$(core_ticks 1 busy)
	w0=$EPOCHREALTIME
	sleep 0.5
	b0=$(core_ticks 0 busy)
	b1=$(core_ticks 1 busy)
	secs=$(elapsed "$w0")
	u0=$(pct "$a0" "$b0" "$secs")
	u1=$(pct "$a1" "$b1" "$secs")
	if [[ $u0 -gt 20 || $u1 -gt 20 ]]; then
		warn "$1: the machine was busy just before (CPU 0 ${u0}%, CPU 1 ${u1}%), so this figure is unreliable"
	fi
}

# load_begin; ...; load_end STEP SYSTEM ROUND: record, for one load, the
# proxy's CPU (cpu), that of every other process on its core (other1), how
# busy CPU 0 was (busy0) and what ran there besides the load and the
# backends (other0). A shared proxy core makes the figure worthless, so
# that is flagged; with WATCH_CPU0=1 (the workload's clients and backends
# saturate CPU 0) a shared CPU 0 is flagged too, unless CPU0_SPARE=1 says
# that this load leaves room there and CPU 0 was below 90%.
load_begin() {
	L_T0=$(cpu_ticks "$PROXY_PID")
	L_C0=$(core_ticks "$PROXY_CPU")
	L_Z0=$(core_ticks "$CLIENT_CPU" busy)
	L_D0=$(backend_ticks)
	children_secs
	L_K0=$CHILD_SECS
	L_W0=$EPOCHREALTIME
}
load_end() {
	local t1 c1 z1 d1 k1 secs other1 other0 busy0
	children_secs
	k1=$CHILD_SECS
	t1=$(cpu_ticks "$PROXY_PID")
	c1=$(core_ticks "$PROXY_CPU")
	z1=$(core_ticks "$CLIENT_CPU" busy)
	d1=$(backend_ticks)
	secs=$(elapsed "$L_W0")
	[[ $2 == direct ]] || emit "$1" "$2" "$3" cpu "$(pct "$L_T0" "$t1" "$secs")"
	other1=$(awk -v c=$((c1 - L_C0)) -v t=$((t1 - L_T0)) -v s="$secs" -v hz="$CLK_TCK" \
		'BEGIN{o = (c - t) / hz / s * 100; if (o < 0) o = 0; printf "%.0f", o}')
	busy0=$(pct "$L_Z0" "$z1" "$secs")
	other0=$(awk -v c=$((z1 - L_Z0)) -v d=$((d1 - L_D0)) -v k="$L_K0" -v k1="$k1" -v s="$secs" -v hz="$CLK_TCK" \
		'BEGIN{o = (c / hz - d / hz - (k1 - k)) / s * 100; if (o < 0) o = 0; printf "%.0f", o}')
	emit "$1" "$2" "$3" other1 "$other1"
	emit "$1" "$2" "$3" other0 "$other0"
	emit "$1" "$2" "$3" busy0 "$busy0"
	if [[ $2 != direct && $other1 -gt 10 ]]; then
		warn "$1/$2 round $3: other processes used ${other1}% of CPU $PROXY_CPU during the load, so this figure is unreliable"
	fi
	if [[ $WATCH_CPU0 == 1 && $other0 -gt 10 && (${CPU0_SPARE:-0} != 1 || $busy0 -ge 90) ]]; then
		warn "$1/$2 round $3: other processes used ${other0}% of CPU $CLIENT_CPU (the clients' and backends' core) during the load, so this figure is unreliable"
	fi
}

declare -A CLIENT_SHOWN
# load STEP SYSTEM ROUND SECS OUT CMD...: one load of CMD on CPU 0, bounded
# to SECS + 30 s: a quiet-machine check first, then CMD with its output in
# OUT (standard error in OUT.err) and its CPU figures recorded. Fails if CMD
# fails or the proxy exited.
load() {
	local step=$1 sys=$2 r=$3 secs=$4 out=$5
	shift 5
	local cmd=(taskset -c "$CLIENT_CPU" "$@")
	if [[ -z ${CLIENT_SHOWN[$step|$sys]:-} ]]; then
		CLIENT_SHOWN[$step|$sys]=1
		meta client "$step" "$sys" "$(show_cmd "${cmd[@]}")"
	fi
	quiet_check "$step/$sys round $r"
	load_begin
	if ! timeout $((secs + 30)) "${cmd[@]}" >"$out" 2>"$out.err" </dev/null; then
		warn "$step/$sys round $r: $1 failed: $(tail -n 3 "$out" "$out.err" 2>/dev/null | grep -v '^==>' | tr '\n' ' ' | head -c 400) (see $out)"
		return 1
	fi
	load_end "$step" "$sys" "$r"
	proxy_ok "$sys"
}

# ------------------------------------------------------------- tool output

# wrk_stats FILE: requests/s (rounded), requests, p50 and p99 in ms, non-2xx
# responses, socket errors; "-" for what is missing.
wrk_stats() {
	awk '
	function ms(v) {
		if (v ~ /us$/) { sub(/us$/, "", v); return sprintf("%.3f", v / 1000) }
		if (v ~ /ms$/) { sub(/ms$/, "", v); return sprintf("%.3f", v) }
		if (v ~ /m$/) { sub(/m$/, "", v); return sprintf("%.3f", v * 60000) }
		if (v ~ /s$/) { sub(/s$/, "", v); return sprintf("%.3f", v * 1000) }
		return "-"
	}
	BEGIN { rps = total = p50 = p99 = "-"; non2xx = errs = 0 }
	/^Requests\/sec:/ { rps = sprintf("%.0f", $2) }
	/ requests in / { total = $1 }
	$1 == "50%" && p50 == "-" { p50 = ms($2) }
	$1 == "99%" && p99 == "-" { p99 = ms($2) }
	/Non-2xx or 3xx responses:/ { non2xx = $NF }
	/Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
	END { print rps, total, p50, p99, non2xx, errs }' "$1"
}

# ------------------------------------------------------------------ running

# run_unit STEP SYSTEM ROUND: one measurement on a freshly started proxy.
run_unit() {
	local step=$1 sys=$2 r=$3
	"${W}_runs" "$step" "$sys" || return 0
	if ! start_proxy "$sys" "$step"; then
		if [[ $sys == lbd ]]; then
			skip_lbd "lbd did not start or did not answer as expected (see $PROXY_LOG)"
		else
			warn "$step/$sys did not start or did not answer as expected in round $r (see $PROXY_LOG)"
		fi
		return 0
	fi
	"${W}_measure" "$step" "$sys" "$r" || true
	stop_proxy
	sleep "$COOLDOWN"
}

backends_alive() {
	local p
	for p in "${BACKEND_PIDS[@]}"; do
		alive "$p" || die "a backend exited (pid $p), see the logs in $WDIR/raw"
	done
}

# run_workload W: the whole of one workload, from its configs to its report.
run_workload() {
	W=$1
	WDIR=$WORK/$W
	mkdir -p "$WDIR/raw" "$WDIR/conf"
	read -r -a SYS_LIST <<<"$SYSTEMS"
	LBD_SKIP_REASON=
	WATCH_CPU0=0
	PROXY_ENV=()
	CLIENT_SHOWN=()
	meta rounds "$ROUNDS"
	meta systems "$SYSTEMS"
	meta strip "$WDIR/conf/"
	"${W}_prepare"
	[[ ${#SYS_LIST[@]} -gt 0 ]] || die "no system in SYSTEMS runs the $W workload"
	check_ports_free
	"${W}_configs"
	"${W}_check"
	[[ ${#SYS_LIST[@]} -gt 0 ]] || die "no system left to measure"
	meta systems_run "${SYS_LIST[*]}"
	local s step r line plan
	for s in "${SYS_LIST[@]}"; do
		[[ $s == direct ]] && continue
		PROXY_ENV=()
		"${W}_proxy" "$s"
		meta proxy "$s" "$(show_cmd "${PROXY_ENV[@]}" taskset -c "$PROXY_CPU" "${PROXY_ARGV[@]}")"
	done
	"${W}_backends"
	log "systems: ${SYS_LIST[*]}; rounds: $ROUNDS; raw outputs: ${WDIR#"$ROOT"/}"
	mapfile -t plan < <("${W}_plan")
	for line in "${plan[@]}"; do
		read -r step r <<<"$line"
		log "$step, round $r of $ROUNDS"
		for s in "${SYS_LIST[@]}"; do
			run_unit "$step" "$s" "$r"
		done
		backends_alive
	done
	stop_all
	declare -F "${W}_finish" >/dev/null && "${W}_finish"
	meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
	mkdir -p "$RESULTS_DIR"
	"$REPORT" -in "$WORK" -out "$RESULTS_DIR" "$W" || die "bench/report failed for $W"
	cp "$RESULTS_DIR/$W.md" "$WDIR/$W.md"
	echo
	awk '/^\| (workload|metric) \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/$W.md"
	if grep -q '^| target |' "$RESULTS_DIR/$W.md"; then
		echo
		awk '/^\| target \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/$W.md"
	fi
	echo
	W='*'
}

for w in "${RUN[@]}"; do run_workload "$w"; done
