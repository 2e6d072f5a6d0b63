# DNS over UDP (bench/run.sh udp, or bench/udp.sh): dnsperf against dnsmasq,
# straight to the server, through the nginx stream module (listen ... udp)
# and through lbd (protocol = "udp"). HAProxy's open-source edition has no
# UDP: its column says so and it is never run.
#
# Three passes per system and round, on one freshly started proxy:
#   throughput  dnsperf as fast as it goes: queries/s, queries lost, average latency
#   latency     dnsperf at a fixed LAT_QPS, every query logged: p50, p99, p99.9, lost
#   capped      dnsperf as fast as it goes, with the proxy held to CAP_PCT% of
#               its core by a cgroup CPU quota: CPU 0 (dnsperf and dnsmasq)
#               then has room to spare, so the proxy is the bottleneck and the
#               figure is the work each proxy does per unit of CPU (direct
#               has no proxy and is not run)
#
# UDP settings (defaults in brackets):
#   DNS_SECS         dnsperf duration of the throughput pass [DURATION or 10]
#   LAT_SECS         dnsperf duration of the latency pass [DURATION or 5]
#   LAT_QPS          query rate of the latency pass, 0 skips that pass [20000]
#   DNS_CLIENTS      dnsperf -c, client sockets [8]
#   DNS_OUTSTANDING  dnsperf -q, queries in flight at most [100]
#   QPS_LIMIT        dnsperf -Q of the throughput pass, empty for none []
#   CAP_PCT          the capped pass's CPU quota, % of one core, 0 skips [40]
#   ports            PORT_BASE+4 (dnsmasq, udp and tcp), +24 (nginx, udp),
#                    +34 (lbd, udp)
#
# dnsmasq answers every name under bench.test itself (--address), reads
# neither /etc/resolv.conf nor /etc/hosts and has no upstream server (the run
# stops unless it logs "no upstream servers configured"), so no query leaves
# 127.0.0.1.
# Sourced by bench/run.sh, which calls the udp_* functions below.

UDP_ZONE=bench.test
UDP_ANSWER=192.0.2.1 # TEST-NET-1: an answer only, never a destination
UDP_NAMES=1000

udp_settings() {
	DNS_SECS=${DNS_SECS:-${DURATION:-10}}
	LAT_SECS=${LAT_SECS:-${DURATION:-5}}
	LAT_QPS=${LAT_QPS:-20000}
	DNS_CLIENTS=${DNS_CLIENTS:-8}
	DNS_OUTSTANDING=${DNS_OUTSTANDING:-100}
	QPS_LIMIT=${QPS_LIMIT:-}
	CAP_PCT=${CAP_PCT:-40}
	local v
	for v in DNS_SECS LAT_SECS DNS_CLIENTS DNS_OUTSTANDING; do need_int "$v"; done
	for v in LAT_QPS CAP_PCT; do need_int "$v" 0; done
	[[ -z $QPS_LIMIT || $QPS_LIMIT =~ ^[1-9][0-9]*$ ]] || die "QPS_LIMIT must be empty or a positive integer, got '$QPS_LIMIT'"
}

udp_packages() {
	command -v dnsperf >/dev/null || echo dnsperf
	# dnsmasq-base is the bare program; the "dnsmasq" package would also
	# install and start a system DNS service on port 53.
	command -v dnsmasq >/dev/null || echo dnsmasq-base
	if has_system nginx; then
		command -v nginx >/dev/null || echo nginx
		{ command -v nginx >/dev/null && nginx_has_stream; } || echo libnginx-mod-stream
	fi
	return 0
}

udp_tools() {
	echo dnsperf dnsmasq
	has_system nginx && echo nginx
	return 0
}

udp_prepare() {
	if has_system haproxy; then
		meta absent '*' haproxy "no UDP"
		drop_system haproxy
	fi
	if has_system nginx && ! nginx_has_stream; then die "nginx has no stream module (apt-get install libnginx-mod-stream)"; fi
	B_DNS=$((PORT_BASE + 4))
	WATCH_CPU0=1 # dnsperf and dnsmasq saturate CPU 0: it is half of the bottleneck
	CLEANUP+=(udp_cleanup)
}

# udp_front SYSTEM: the UDP port dnsperf sends to for that system.
udp_front() {
	case $1 in
	direct) echo "$B_DNS" ;;
	nginx) echo $((PORT_BASE + 24)) ;;
	lbd) echo $((PORT_BASE + 34)) ;;
	esac
}

udp_ports() {
	local s
	echo "udp $B_DNS"
	echo "tcp $B_DNS" # dnsmasq listens on tcp too
	for s in "${SYS_LIST[@]}"; do [[ $s == direct ]] || echo "udp $(udp_front "$s")"; done
}

udp_configs() {
	local c=$WDIR/conf i mod="" m
	# The query file: A queries for h1..h$UDP_NAMES.$UDP_ZONE, all answered by dnsmasq.
	for ((i = 1; i <= UDP_NAMES; i++)); do echo "h$i.$UDP_ZONE A"; done >"$c/queries.txt"
	echo "h1.$UDP_ZONE A" >"$c/probe.txt"

	# dnsmasq: answers $UDP_ZONE itself; no resolv.conf, no hosts file, no
	# upstream server, no config file, no daemonising, no syslog, its own pid file.
	DNSMASQ_ARGS=(--keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --no-poll
		--port="$B_DNS" --listen-address=127.0.0.1 --bind-interfaces
		--address="/$UDP_ZONE/$UDP_ANSWER" --cache-size=0 --log-facility=-
		--pid-file="$WDIR/dnsmasq.pid")
	# As root it drops to nobody once its sockets are open.
	if [[ $(id -u) == 0 ]]; then DNSMASQ_ARGS+=(--user=nobody --group=nogroup); fi

	mkdir -p "$WDIR/nginx-udp/logs"
	if m=$(stream_module); then mod="load_module $m;"; fi
	cat >"$c/nginx-udp.conf" <<EOF
$mod
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WDIR/nginx-udp/nginx.pid;
error_log $WDIR/nginx-udp/logs/error.log warn;

events {
    worker_connections 20000;
}

stream {
    server {
        listen 127.0.0.1:$(udp_front nginx) udp;
        proxy_pass 127.0.0.1:$B_DNS;
        proxy_responses 1;
        proxy_timeout 10s;
    }
}
EOF

	cat >"$c/lbd-udp.toml" <<EOF
[global]
workers = 1
metrics_listen = ""
admin_socket = "$TMP/lbd-admin.sock"
log_level = "warn"
shutdown_timeout = "2s"

[[listener]]
name = "dns"
bind = "127.0.0.1:$(udp_front lbd)"
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
	meta conf nginx nginx-udp.conf
	meta conf lbd lbd-udp.toml
	meta absent cap direct "n/a"
	meta steps "qps lat cap"
	local v
	for v in DNS_SECS LAT_SECS LAT_QPS DNS_CLIENTS DNS_OUTSTANDING QPS_LIMIT; do meta set "$v" "${!v}"; done
	meta set DNS_PORT "$B_DNS"
	meta set ZONE "$UDP_ZONE"
	meta set ANSWER "$UDP_ANSWER"
	meta set NAMES "$UDP_NAMES"
}

udp_check() {
	lbd_check "$WDIR/conf/lbd-udp.toml" UDP skip
	check_nginx udp "$WDIR/nginx-udp" "$WDIR/conf/nginx-udp.conf"
}

udp_proxy() {
	case $1 in
	nginx) nginx_argv "$WDIR/nginx-udp" "$WDIR/conf/nginx-udp.conf" && PROXY_ARGV=("${NGINX_ARGV[@]}") ;;
	lbd) PROXY_ARGV=("$LBD" run -c "$WDIR/conf/lbd-udp.toml") ;;
	esac
}

udp_port() { echo "udp $(udp_front "$1")"; }

# udp_query PORT: one query; succeeds if it was answered with NOERROR.
udp_query() {
	local out=$WDIR/raw/probe-$1-$PROXY_SEQ.txt
	timeout 10 taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" -d "$WDIR/conf/probe.txt" -n 1 -t 2 >"$out" 2>&1 </dev/null || true
	grep -Eq 'Queries completed:[[:space:]]+1 ' "$out" && grep -Eq 'Response codes:[[:space:]]+NOERROR 1 ' "$out"
}

# udp_probe SYSTEM STEP PORT: a proxy is ready once a query goes through.
udp_probe() {
	local i
	for ((i = 0; i < 3; i++)); do
		udp_query "$3" && return 0
		sleep 0.3
	done
	log "$1: a query to udp 127.0.0.1:$3 got no NOERROR answer (see $WDIR/raw/probe-$3-$PROXY_SEQ.txt)"
	return 1
}

udp_backends() {
	start_backend dnsmasq "$WDIR/raw/dnsmasq.log" dnsmasq "${DNSMASQ_ARGS[@]}"
	wait_udp "$B_DNS" "$LAST_PID" 10 || die "dnsmasq did not start, see $WDIR/raw/dnsmasq.log"
	udp_query "$B_DNS" || die "dnsmasq did not answer h1.$UDP_ZONE with NOERROR, see $WDIR/raw/probe-$B_DNS-$PROXY_SEQ.txt"
	# Belt and braces: dnsmasq must have no upstream to forward anything to.
	grep -q 'no upstream servers configured' "$WDIR/raw/dnsmasq.log" ||
		die "dnsmasq does not report 'no upstream servers configured', refusing to run (see $WDIR/raw/dnsmasq.log)"
	udp_cap_setup
	meta set CAP_PCT "$CAP_PCT"
	meta set CAP_KIND "$CAP_KIND"
}

# udp_cap_setup: a cgroup whose tasks share CAP_PCT% of one core, in slices
# of 10 ms (cgroup v1 cpu controller, or v2 cpu.max). Without one, the
# capped pass is skipped, with a note.
CAP_DIR=
CAP_KIND=
udp_cap_setup() {
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

# udp_cap_enter PID: PID, its threads and its children's go under the quota.
udp_cap_enter() {
	local pid t
	for pid in "$1" $(pgrep -P "$1" || true); do
		if [[ $CAP_KIND == v1 ]]; then
			for t in /proc/"$pid"/task/*; do echo "${t##*/}" >"$CAP_DIR/tasks" 2>/dev/null || true; done
		else
			echo "$pid" >"$CAP_DIR/cgroup.procs" 2>/dev/null || true
		fi
	done
}

udp_cleanup() {
	local pid
	# dnsmasq never forks with --keep-in-foreground; should it ever, its pid
	# file still names it, and its command line names this run's directory.
	pid=$(cat "$WDIR/dnsmasq.pid" 2>/dev/null || true)
	if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--pid-file=$WDIR/dnsmasq.pid"; then
		kill -TERM "$pid" 2>/dev/null || true
	fi
	[[ -z $CAP_DIR ]] || rmdir "$CAP_DIR" 2>/dev/null || true
}

udp_finish() {
	udp_cleanup
	CAP_DIR=
}

# Every round, each system once: its three passes on one proxy.
udp_plan() {
	local r
	for ((r = 1; r <= ROUNDS; r++)); do echo "dns $r"; done
}

udp_runs() { return 0; }

udp_measure() {
	local sys=$2 r=$3
	udp_qps qps "$sys" "$r" || true
	if [[ $LAT_QPS -gt 0 ]] && { [[ $sys == direct ]] || alive "$PROXY_PID"; }; then
		sleep 1
		udp_lat "$sys" "$r" || true
	fi
	if [[ $CAP_PCT -gt 0 && $sys != direct ]] && alive "$PROXY_PID"; then
		udp_cap_enter "$PROXY_PID"
		sleep 1
		CPU0_SPARE=1 # the point of the capped pass
		udp_qps cap "$sys" "$r" || true
		CPU0_SPARE=0
	fi
}

# dp_stat FILE LABEL: the first number after "LABEL:" in dnsperf's statistics.
dp_stat() { awk -v l="$2:" 'index($0, l) { sub(/.*: */, ""); print $1; exit }' "$1"; }

# rcodes FILE: the response codes other than NOERROR, or nothing.
rcodes() { awk '/Response codes:/ { sub(/.*: */, ""); print }' "$1" | tr ',' '\n' | grep -v NOERROR | tr -s ' \n' ' ' || true; }

# ms SECONDS: in milliseconds with three decimals, or nothing.
ms() { awk -v v="$1" 'BEGIN{if (v == "") exit; printf "%.3f", v * 1000}'; }

# udp_qps qps|cap SYSTEM ROUND: dnsperf as fast as it goes (for cap, the
# proxy already under the quota).
udp_qps() {
	local step=$1 sys=$2 r=$3 out qps sent lost avg sd other
	out=$WDIR/raw/$step-$sys-r$r.txt
	local args=(-s 127.0.0.1 -p "$(udp_front "$sys")" -d "$WDIR/conf/queries.txt" -l "$DNS_SECS" -c "$DNS_CLIENTS" -T 1 -q "$DNS_OUTSTANDING")
	[[ -n $QPS_LIMIT && $step == qps ]] && args+=(-Q "$QPS_LIMIT")
	load "$step" "$sys" "$r" "$DNS_SECS" "$out" dnsperf "${args[@]}" || return 1
	qps=$(dp_stat "$out" "Queries per second")
	sent=$(dp_stat "$out" "Queries sent")
	lost=$(dp_stat "$out" "Queries lost")
	avg=$(dp_stat "$out" "Average Latency (s)")
	sd=$(dp_stat "$out" "Latency StdDev (s)")
	if [[ -z $qps || -z $sent || $sent == 0 || -z $lost ]]; then
		warn "$step/$sys round $r: no statistics in dnsperf output (see $out)"
		return 1
	fi
	other=$(rcodes "$out")
	[[ -z $other ]] || warn "$step/$sys round $r: answers other than NOERROR: $other (see $out)"
	[[ $lost == 0 ]] || warn "$step/$sys round $r: $lost of $sent queries lost (see $out)"
	qps=$(awk -v v="$qps" 'BEGIN{printf "%.0f", v}')
	emit "$step" "$sys" "$r" qps "$qps"
	emit "$step" "$sys" "$r" lost "$lost"
	emit "$step" "$sys" "$r" sent "$sent"
	if [[ $step == cap ]]; then
		log "  cap $sys at ${CAP_PCT}% of a core: $qps queries/s, $lost of $sent lost"
		return 0
	fi
	[[ -z $avg ]] || emit qps "$sys" "$r" avg "$(ms "$avg")"
	[[ -z $sd ]] || emit qps "$sys" "$r" sd "$(ms "$sd")"
	log "  qps $sys: $qps queries/s, $lost of $sent lost, average $(ms "${avg:-0}") ms"
}

# udp_lat SYSTEM ROUND: dnsperf at LAT_QPS, every query's latency logged.
udp_lat() {
	local sys=$1 r=$2 out qps sent lost p50 p99 p999
	out=$WDIR/raw/lat-$sys-r$r.txt
	load lat "$sys" "$r" "$LAT_SECS" "$out" dnsperf -s 127.0.0.1 -p "$(udp_front "$sys")" -d "$WDIR/conf/queries.txt" \
		-l "$LAT_SECS" -c "$DNS_CLIENTS" -T 1 -q "$DNS_OUTSTANDING" -Q "$LAT_QPS" -v || return 1
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
	emit lat "$sys" "$r" answered "$(printf '%.0f' "$qps")"
	emit lat "$sys" "$r" p50 "$p50"
	emit lat "$sys" "$r" p99 "$p99"
	emit lat "$sys" "$r" p999 "$p999"
	emit lat "$sys" "$r" lost "$lost"
	emit lat "$sys" "$r" sent "$sent"
	log "  lat $sys at $LAT_QPS q/s: p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms, $lost of $sent lost"
}
