# Shell functions shared by bench/run.sh and bench/udp.sh. Sourced, not run:
# they use the caller's settings (NOTES, STARTED, SYSTEMS, ...) at call time.

warn() { log "WARNING: $*"; NOTES+=("$*"); }

die() {
	log "ERROR: $*"
	exit 1
}

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

# start_bg LOGFILE CMD...: run CMD in the background; its pid is in LAST_PID.
start_bg() {
	local logf=$1
	shift
	"$@" >"$logf" 2>&1 &
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

# stop_pid PID: SIGTERM the process and its descendants, SIGKILL after 5 s.
stop_pid() {
	local pid=$1 all i
	alive "$pid" || {
		wait "$pid" 2>/dev/null || true
		forget "$pid"
		return 0
	}
	# shellcheck disable=SC2207
	all=($(descendants "$pid") "$pid")
	kill -TERM "${all[@]}" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		local any=0 p
		for p in "${all[@]}"; do alive "$p" && any=1; done
		[[ $any == 0 ]] && break
		sleep 0.1
	done
	kill -KILL "${all[@]}" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	forget "$pid"
}

# forget PID: drop a stopped process from STARTED so that the exit trap
# never signals a later process that reuses its pid.
forget() {
	local p keep=()
	for p in "${STARTED[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
	STARTED=("${keep[@]}")
}

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

# cpu_ticks PID: user+system clock ticks of the process tree.
cpu_ticks() {
	local p sum=0 v
	[[ -z $1 ]] && {
		echo 0
		return
	}
	for p in "$1" $(descendants "$1"); do
		v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# core_ticks CPU [busy]: user+nice+system clock ticks of one CPU; with
# "busy", irq, softirq and steal time too.
core_ticks() {
	awk -v c="cpu$1" -v all="${2:-}" '$1 == c {print $2 + $3 + $4 + (all == "busy" ? $7 + $8 + $9 : 0)}' /proc/stat
}

# elapsed START: seconds since START, an earlier $EPOCHREALTIME.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b - a}'; }

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

set_cmd() {
	local k="$1|$2"
	shift 2
	[[ -n ${CMDLINE[$k]:-} ]] || CMDLINE[$k]="$*"
}

# pct TICKS_BEFORE TICKS_AFTER SECONDS
pct() { awk -v a="$1" -v b="$2" -v s="$3" -v hz="$CLK_TCK" 'BEGIN{printf "%.0f", (b-a)/hz/s*100}'; }

median() {
	awk '{for (i = 1; i <= NF; i++) print $i}' <<<"$1" | sort -g | awk '{v[NR]=$1} END{
		if (NR == 0) exit
		m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
		print m
	}'
}

ratio() {
	[[ -z $1 || -z $2 ]] && {
		echo ""
		return
	}
	awk -v a="$1" -v b="$2" 'BEGIN{ if (b == 0) exit; printf "%.2f", a/b }'
}

sysname() {
	case $1 in direct) echo "direct" ;; haproxy) echo "HAProxy" ;; nginx) echo "nginx" ;; lbd) echo "lbd" ;; esac
}

cleanup() {
	local rc=$? pid
	trap - EXIT INT TERM
	for pid in "${STARTED[@]}"; do stop_pid "$pid"; done
	rm -rf "$TMP"
	exit "$rc"
}

listening() { [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

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

# wait_listen PORT PID SECONDS: wait until PORT listens; fail early if PID dies.
wait_listen() { wait_for listening "$@"; }

add_val() { VAL[$1|$2]="${VAL[$1|$2]:-}${VAL[$1|$2]:+ }$3"; }

# show_cmd ARGS...: the command line for the report, quoting arguments with spaces.
show_cmd() {
	local a out=()
	for a in "$@"; do
		if [[ $a == *" "* ]]; then out+=("\"$a\""); else out+=("$a"); fi
	done
	echo "${out[*]}"
}

# to_ms VALUE_WITH_UNIT: wrk's "123.45us" / "1.23ms" / "1.00s" / "1.00m" in ms.
to_ms() {
	awk -v v="$1" 'BEGIN{
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v/1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v*60000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v*1000 }
		else { exit 1 }
	}'
}

minmax() { awk '{for (i = 1; i <= NF; i++) print $i}' <<<"$1" | sort -g | awk 'NR == 1 {a = $1} {b = $1} END{if (NR) print a, b}'; }

# apt_install PKG...: install the packages a benchmark lacks (nothing when
# none), with apt-get update only if a first try fails; stop any haproxy or
# nginx service that the install started, leaving processes that ran before.
apt_install() {
	[[ $# -gt 0 ]] || return 0
	if [[ $NO_INSTALL == 1 ]]; then
		die "missing packages and NO_INSTALL=1: $*"
	fi
	if [[ $(id -u) != 0 ]]; then
		die "missing packages, run as root or install them: apt-get install -y $*"
	fi
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
