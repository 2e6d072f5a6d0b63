# Layer-4 TCP (bench/run.sh [bulk] [conn] [rr] [idle]): lbd against HAProxy
# (mode tcp, nbthread 1, option splice-auto) and the nginx stream module
# (worker_processes 1), with the no-proxy path as a baseline.
#
#   bulk  iperf3 through the proxy, one stream and eight streams (Gbit/s)
#   conn  wrk with "Connection: close", 32 connections, to an nginx backend
#         returning "ok" (connections/s)
#   rr    wrk keep-alive, 64 connections, same backend (requests/s, p50, p99)
#   idle  bench/idleconns holds IDLE_CONNS connections open, one byte
#         exchanged on each: the growth of the proxy's RSS per connection,
#         and the proxy's CPU while it holds them
#
# TCP settings (defaults in brackets):
#   BULK_SECS     iperf3 duration [DURATION or 5]
#   WRK_SECS      wrk duration [DURATION or 8]
#   WRK_THREADS   wrk threads [1]
#   IDLE_CONNS    connections held by the idle workload [4000]
#   IDLE_CPU_SECS seconds over which the proxy's CPU is measured while it
#                 holds them, doing nothing else [10]
#   ports         PORT_BASE+1..+3 (backends), +11..+13 (HAProxy), +21..+23
#                 (nginx), +31..+33 (lbd)
# Sourced by bench/run.sh, which calls the tcp_* functions below.

tcp_settings() {
	BULK_SECS=${BULK_SECS:-${DURATION:-5}}
	WRK_SECS=${WRK_SECS:-${DURATION:-8}}
	WRK_THREADS=${WRK_THREADS:-1}
	IDLE_CONNS=${IDLE_CONNS:-4000}
	IDLE_CPU_SECS=${IDLE_CPU_SECS:-10}
	local v p
	for v in BULK_SECS WRK_SECS WRK_THREADS IDLE_CONNS IDLE_CPU_SECS; do need_int "$v"; done
	TCP_WORKLOADS=()
	for p in bulk conn rr idle; do [[ " ${TCP_PARTS[*]} " == *" $p "* ]] && TCP_WORKLOADS+=("$p"); done
	TCP_STEPS=()
	for p in "${TCP_WORKLOADS[@]}"; do
		if [[ $p == bulk ]]; then TCP_STEPS+=(bulk1 bulk8); else TCP_STEPS+=("$p"); fi
	done
}

tcp_has() { [[ " ${TCP_WORKLOADS[*]} " == *" $1 "* ]]; }

tcp_packages() {
	tcp_has bulk && ! command -v iperf3 >/dev/null && echo iperf3
	command -v wrk >/dev/null || echo wrk
	command -v nginx >/dev/null || echo nginx
	if has_system nginx && ! { command -v nginx >/dev/null && nginx_has_stream; }; then echo libnginx-mod-stream; fi
	has_system haproxy && ! command -v haproxy >/dev/null && echo haproxy
	command -v jq >/dev/null || echo jq
	return 0
}

tcp_tools() {
	tcp_has bulk && echo iperf3 jq
	echo wrk nginx
	has_system haproxy && echo haproxy
	return 0
}

tcp_prepare() {
	if has_system nginx && ! nginx_has_stream; then die "nginx has no stream module (apt-get install libnginx-mod-stream)"; fi
	B_IPERF=$((PORT_BASE + 1))
	B_HTTP=$((PORT_BASE + 2))
	B_IDLE=$((PORT_BASE + 3))
}

# tcp_front SYSTEM bulk|http|idle: the port a client dials for that system.
tcp_front() {
	local off base=$PORT_BASE
	case $2 in bulk) off=1 ;; http) off=2 ;; idle) off=3 ;; esac
	case $1 in haproxy) base=$((PORT_BASE + 10)) ;; nginx) base=$((PORT_BASE + 20)) ;; lbd) base=$((PORT_BASE + 30)) ;; esac
	echo $((base + off))
}

tcp_kind() {
	case $1 in bulk*) echo bulk ;; idle) echo idle ;; *) echo http ;; esac
}

tcp_ports() {
	local s k
	echo "tcp $B_IPERF"
	echo "tcp $B_HTTP"
	echo "tcp $B_IDLE"
	for s in "${SYS_LIST[@]}"; do
		[[ $s == direct ]] && continue
		for k in bulk http idle; do echo "tcp $(tcp_front "$s" "$k")"; done
	done
}

tcp_configs() {
	local c=$WDIR/conf k back mod="" m
	cat >"$c/haproxy.cfg" <<EOF
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
    bind 127.0.0.1:$(tcp_front haproxy bulk)
    server s1 127.0.0.1:$B_IPERF

listen http
    bind 127.0.0.1:$(tcp_front haproxy http)
    server s1 127.0.0.1:$B_HTTP

listen idle
    bind 127.0.0.1:$(tcp_front haproxy idle)
    server s1 127.0.0.1:$B_IDLE
EOF

	mkdir -p "$WDIR/nginx-stream/logs" "$WDIR/nginx-backend/logs"
	if m=$(stream_module); then mod="load_module $m;"; fi
	cat >"$c/nginx-stream.conf" <<EOF
$mod
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WDIR/nginx-stream/nginx.pid;
error_log $WDIR/nginx-stream/logs/error.log warn;

events {
    worker_connections 20000;
}

stream {
    server {
        listen 127.0.0.1:$(tcp_front nginx bulk);
        proxy_pass 127.0.0.1:$B_IPERF;
    }
    server {
        listen 127.0.0.1:$(tcp_front nginx http);
        proxy_pass 127.0.0.1:$B_HTTP;
    }
    server {
        listen 127.0.0.1:$(tcp_front nginx idle);
        proxy_pass 127.0.0.1:$B_IDLE;
    }
}
EOF

	local d=$WDIR/nginx-backend
	cat >"$c/nginx-backend.conf" <<EOF
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

	cat >"$c/lbd.toml" <<EOF
[global]
workers = 1
metrics_listen = ""
admin_socket = "$TMP/lbd-admin.sock"
log_level = "warn"
shutdown_timeout = "2s"
EOF
	for k in bulk http idle; do
		case $k in bulk) back=$B_IPERF ;; http) back=$B_HTTP ;; idle) back=$B_IDLE ;; esac
		cat >>"$c/lbd.toml" <<EOF

[[listener]]
name = "$k"
bind = "127.0.0.1:$(tcp_front lbd "$k")"
protocol = "tcp"
pool = "$k"

[[pool]]
name = "$k"
algorithm = "wrr"

  [[pool.backend]]
  address = "127.0.0.1:$back"

  [pool.health_check]
  type = "none"
EOF
	done

	meta conf haproxy haproxy.cfg
	meta conf nginx nginx-stream.conf
	meta conf lbd lbd.toml
	if tcp_has conn || tcp_has rr; then meta conf '*' nginx-backend.conf; fi
	meta steps "${TCP_STEPS[*]}"
	meta set WORKLOADS "${TCP_WORKLOADS[*]}"
	for k in BULK_SECS WRK_SECS IDLE_CONNS IDLE_CPU_SECS; do meta set "$k" "${!k}"; done
	tcp_has idle && meta set IDLE_PORT "$B_IDLE"
	return 0
}

tcp_check() {
	lbd_check "$WDIR/conf/lbd.toml" TCP note
	check_nginx stream "$WDIR/nginx-stream" "$WDIR/conf/nginx-stream.conf"
	check_haproxy "$WDIR/conf/haproxy.cfg"
}

tcp_proxy() {
	case $1 in
	haproxy) PROXY_ARGV=(haproxy -f "$WDIR/conf/haproxy.cfg" -db) ;;
	nginx) nginx_argv "$WDIR/nginx-stream" "$WDIR/conf/nginx-stream.conf" && PROXY_ARGV=("${NGINX_ARGV[@]}") ;;
	lbd) PROXY_ARGV=("$LBD" run -c "$WDIR/conf/lbd.toml") ;;
	esac
}

tcp_port() { echo "tcp $(tcp_front "$1" "$(tcp_kind "$2")")"; }

tcp_backends() {
	if tcp_has bulk; then
		start_backend iperf3 "$WDIR/raw/iperf3-server.log" iperf3 -s -B 127.0.0.1 -p "$B_IPERF"
		wait_listen "$B_IPERF" "$LAST_PID" 10 || die "iperf3 server did not start, see $WDIR/raw/iperf3-server.log"
	fi
	if tcp_has conn || tcp_has rr; then
		nginx_argv "$WDIR/nginx-backend" "$WDIR/conf/nginx-backend.conf"
		"${NGINX_ARGV[@]:0:7}" -t >"$WDIR/raw/nginx-backend-test.log" 2>&1 ||
			die "nginx backend config invalid, see $WDIR/raw/nginx-backend-test.log"
		start_backend nginx "$WDIR/raw/nginx-backend.log" "${NGINX_ARGV[@]}"
		wait_listen "$B_HTTP" "$LAST_PID" 10 || die "nginx backend did not start, see $WDIR/raw/nginx-backend.log"
		local body
		body=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$B_HTTP; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3" | tail -n 1) || true
		[[ $body == ok ]] || die "nginx backend answered '$body' instead of 'ok'"
	fi
	if tcp_has idle; then
		# Built as its own module so that a main module in flux cannot break it.
		IDLE_BIN=$WDIR/idleconns
		mkdir -p "$TMP/idleconns"
		cp bench/idleconns/main.go "$TMP/idleconns/"
		printf 'module idleconns\n\ngo 1.22\n' >"$TMP/idleconns/go.mod"
		(cd "$TMP/idleconns" && GOWORK=off GOFLAGS='' go build -o "$IDLE_BIN" .) >"$WDIR/raw/idleconns-build.log" 2>&1 ||
			die "building bench/idleconns failed, see $WDIR/raw/idleconns-build.log"
	fi
}

# Each step, all its rounds, before the next.
tcp_plan() {
	local s r
	for s in "${TCP_STEPS[@]}"; do
		for ((r = 1; r <= ROUNDS; r++)); do echo "$s $r"; done
	done
}

# No proxy, no proxy memory: direct has no idle figure.
tcp_runs() { [[ ! ($1 == idle && $2 == direct) ]]; }

tcp_measure() {
	case $1 in
	bulk1) tcp_bulk "$2" "$3" 1 ;;
	bulk8) tcp_bulk "$2" "$3" 8 ;;
	conn | rr) tcp_wrk "$2" "$3" "$1" ;;
	idle) tcp_idle "$2" "$3" ;;
	esac
}

# tcp_bulk SYSTEM ROUND STREAMS
tcp_bulk() {
	local sys=$1 r=$2 step=bulk$3 out gbps
	out=$WDIR/raw/$step-$sys-r$r.json
	load "$step" "$sys" "$r" "$BULK_SECS" "$out" iperf3 -c 127.0.0.1 -p "$(tcp_front "$sys" bulk)" -t "$BULK_SECS" -P "$3" -J || return 1
	gbps=$(jq -r '.end.sum_received.bits_per_second // empty | . / 1e9 | (. * 100 | round) / 100' "$out" 2>/dev/null || true)
	[[ -n $gbps ]] || {
		warn "$step/$sys round $r: no throughput in iperf3 output $out"
		return 1
	}
	emit "$step" "$sys" "$r" gbps "$gbps"
	log "  $step $sys: $gbps Gbit/s"
}

# tcp_wrk SYSTEM ROUND conn|rr
tcp_wrk() {
	local sys=$1 r=$2 step=$3 out rps p50 p99 total non2xx errs args=(-c64)
	out=$WDIR/raw/$step-$sys-r$r.txt
	[[ $step == conn ]] && args=(-c32 -H "Connection: close")
	load "$step" "$sys" "$r" "$WRK_SECS" "$out" wrk -t"$WRK_THREADS" -d"${WRK_SECS}s" --latency "${args[@]}" \
		"http://127.0.0.1:$(tcp_front "$sys" http)/" || return 1
	read -r rps total p50 p99 non2xx errs < <(wrk_stats "$out")
	if [[ $rps == - || $total == - || $total == 0 ]]; then
		warn "$step/$sys round $r: no requests completed (see $out)"
		return 1
	fi
	if [[ $non2xx -gt 0 || $errs -gt 0 ]]; then
		warn "$step/$sys round $r: $non2xx non-2xx responses and $errs socket errors in $total requests, so this figure is unreliable (see $out)"
	fi
	emit "$step" "$sys" "$r" rps "$rps"
	if [[ $step == conn ]]; then
		log "  conn $sys: $rps connections/s"
		return 0
	fi
	[[ $p50 != - && $p99 != - ]] || {
		warn "rr/$sys round $r: cannot parse latency distribution (see $out)"
		return 1
	}
	emit rr "$sys" "$r" p50 "$p50"
	emit rr "$sys" "$r" p99 "$p99"
	log "  rr $sys: $rps req/s, p50 $p50 ms, p99 $p99 ms"
}

# tcp_idle SYSTEM ROUND
tcp_idle() {
	local sys=$1 r=$2 out before after pid i kib cpu port
	port=$(tcp_front "$sys" idle)
	out=$WDIR/raw/idle-$sys-r$r.txt
	local cmd=(taskset -c "$CLIENT_CPU" "$IDLE_BIN" -listen "127.0.0.1:$B_IDLE" -target "127.0.0.1:$port"
		-n "$IDLE_CONNS" -timeout 60s -hold 180s)
	if [[ -z ${CLIENT_SHOWN[idle|$sys]:-} ]]; then
		CLIENT_SHOWN[idle|$sys]=1
		meta client idle "$sys" "$(show_cmd "${cmd[@]}")"
	fi
	quiet_check "idle/$sys round $r"
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
	cpu=$(cpu_pct "$PROXY_PID" "$IDLE_CPU_SECS")
	proxy_ok "$sys" || {
		stop_pid "$pid"
		return 1
	}
	stop_pid "$pid"
	kib=$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN{printf "%.2f", (a-b)/n}')
	echo "proxy VmRSS before=${before}kB after=${after}kB per_conn=${kib}KiB" >>"$out"
	echo "proxy CPU while idle: ${cpu}% of a core over ${IDLE_CPU_SECS}s" >>"$out"
	emit idle "$sys" "$r" kib "$kib"
	emit idle "$sys" "$r" idlecpu "$cpu"
	log "  idle $sys: RSS ${before} kB -> ${after} kB, $kib KiB per connection; ${cpu}% of a core while idle"
}
