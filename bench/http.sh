#!/usr/bin/env bash
# HTTP (layer-7) benchmark: wrk with keep-alive against nginx backends,
# straight to one backend, through HAProxy (mode http), through nginx
# (proxy_pass, upstream keepalive) and through lbd (protocol = "http").
# `make bench` runs this after the UDP workload, as `bench/run.sh http`.
#
# Usage: bench/http.sh [plain] [fwd] [jwt]  (same as: bench/run.sh http; default: all)
#
#   plain  one catch-all route to a round-robin pool of the three backend
#          ports: requests/s, p50, p99. The peers run bare: they add no
#          forwarding header, while lbd always sets X-Forwarded-For, -Proto
#          and -Host (as every lbd http listener does)
#   fwd    the same, with HAProxy and nginx set up to do what lbd does on
#          every request: drop the client's X-Forwarded-For and Forwarded,
#          set X-Forwarded-For to the peer, X-Forwarded-Proto and
#          X-Forwarded-Host; each proxy is checked to deliver exactly those
#          headers first (lbd serves fwd on its plain listener; direct is
#          not run)
#   jwt    the same route behind JWT verification on every request (RS256,
#          or HS256 with JWT_ALG=HS256); lbd ([[auth]] with a JWKS or an
#          HMAC secret file) against HAProxy (jwt_verify and
#          an exp check in http-request rules); nginx (open source) has no
#          JWT, so its column says so, and direct is not run
#
# Environment (defaults in brackets):
#   SYSTEMS      systems in run order ["direct haproxy nginx lbd"]
#   ROUNDS       rounds per measurement; the table shows the median [3]
#   DURATION     seconds per load, sets WRK_SECS
#   WRK_SECS     wrk duration [8]
#   WRK_CONNS    wrk connections, keep-alive [64]
#   WRK_THREADS  wrk threads [1]
#   COOLDOWN     seconds of rest between measurements [2]
#   PORT_BASE    127.0.0.1 ports PORT_BASE+5..+7 (the backends), +15/+16
#                (HAProxy), +25 (nginx), +35/+36 (lbd) [19200]
#   LBD          lbd binary [./bin/lbd]
#   RESULTS_DIR  where http.md and http.png go [bench/results]
#   NO_INSTALL=1 never run apt-get
#
# The proxy runs alone on CPU 1, freshly started for every measurement; wrk
# and the backends (one nginx, worker_processes 1, listening on three ports)
# run on CPU 0. Traffic stays on 127.0.0.1, every load stops by itself, and
# everything started here is stopped on exit. Raw outputs go to
# bench/work/<timestamp>-http/.
set -Eeuo pipefail
trap 'log "ERROR: status $? at line $LINENO: $BASH_COMMAND"' ERR

PATH=$PATH:/usr/sbin:/sbin # nginx and haproxy live there
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SYSTEMS=${SYSTEMS:-"direct haproxy nginx lbd"}
ROUNDS=${ROUNDS:-3}
WRK_SECS=${WRK_SECS:-${DURATION:-8}}
WRK_CONNS=${WRK_CONNS:-64}
WRK_THREADS=${WRK_THREADS:-1}
COOLDOWN=${COOLDOWN:-2}
PORT_BASE=${PORT_BASE:-19200}
LBD=${LBD:-./bin/lbd}
RESULTS_DIR=${RESULTS_DIR:-bench/results}
NO_INSTALL=${NO_INSTALL:-0}

PROXY_CPU=1
CLIENT_CPU=0

log() { printf '[bench-http %s] %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"
NOTES=()

# ---------------------------------------------------------------- arguments

MODES=()
for arg in "$@"; do
	case $arg in
	http) ;;
	plain | fwd | jwt) MODES+=("$arg") ;;
	-h | --help)
		sed -n '2,/^set -/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown argument '$arg' (expected: plain fwd jwt)" ;;
	esac
done
[[ ${#MODES[@]} -gt 0 ]] || MODES=(plain fwd jwt)
has_mode() {
	local m
	for m in "${MODES[@]}"; do [[ $m == "$1" ]] && return 0; done
	return 1
}

read -r -a SYS_LIST <<<"$SYSTEMS"
for s in "${SYS_LIST[@]}"; do
	case $s in
	direct | haproxy | nginx | lbd) ;;
	*) die "unknown system '$s' in SYSTEMS (expected: direct haproxy nginx lbd)" ;;
	esac
done
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "SYSTEMS is empty"
for v in ROUNDS WRK_SECS WRK_CONNS WRK_THREADS COOLDOWN PORT_BASE; do
	[[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 || ($v == COOLDOWN && ${!v} == 0) ]] ||
		die "$v must be a positive integer, got '${!v}'"
done

# -------------------------------------------------------------------- setup

[[ $(nproc --all) -ge 2 ]] || die "needs at least 2 CPUs (proxy on CPU $PROXY_CPU, load on CPU $CLIENT_CPU)"

mkdir -p bench/work
# bench/run.sh holds the lock already when it runs this script.
if [[ ${LBD_BENCH_LOCKED:-0} != 1 ]]; then
	exec 9>bench/work/.lock
	flock -n 9 || die "another bench/run.sh, bench/udp.sh or bench/http.sh is running (bench/work/.lock)"
fi

STAMP=$(date +%Y%m%d-%H%M%S)-http
WORK=$ROOT/bench/work/$STAMP
mkdir -p "$WORK/raw" "$WORK/conf"
ln -sfn "$STAMP" bench/work/latest-http
TMP=$(mktemp -d /tmp/lbd-bench-http.XXXXXX)

# --------------------------------------------------------- process handling

STARTED=()
LAST_PID=

trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------- installation

install_missing() {
	local pkgs=()
	command -v wrk >/dev/null || pkgs+=(wrk)
	command -v nginx >/dev/null || pkgs+=(nginx)
	has_system haproxy && ! command -v haproxy >/dev/null && pkgs+=(haproxy)
	command -v openssl >/dev/null || pkgs+=(openssl)
	command -v gnuplot >/dev/null || pkgs+=(gnuplot-nox)
	command -v taskset >/dev/null || pkgs+=(util-linux)
	command -v ss >/dev/null || pkgs+=(iproute2)
	apt_install "${pkgs[@]}"
}

install_missing
for t in wrk nginx openssl taskset ss; do
	command -v "$t" >/dev/null || die "$t not found"
done
if has_system haproxy && ! command -v haproxy >/dev/null; then die "haproxy not found"; fi

# -------------------------------------------------------------------- ports

BACKENDS=($((PORT_BASE + 5)) $((PORT_BASE + 6)) $((PORT_BASE + 7)))

# front_port SYSTEM plain|fwd|jwt: the port wrk dials for that system. lbd
# always sets the forwarding headers, so its plain listener serves fwd too.
front_port() {
	local off=0
	case $2 in jwt) off=1 ;; fwd) off=2 ;; esac
	case $1 in
	direct) echo "${BACKENDS[0]}" ;;
	haproxy) echo $((PORT_BASE + 15 + off)) ;;
	nginx) echo $((PORT_BASE + 25 + off / 2)) ;;
	lbd) echo $((PORT_BASE + 35 + off % 2)) ;;
	esac
}

ALL_PORTS=("${BACKENDS[@]}" $((PORT_BASE + 15)) $((PORT_BASE + 16)) $((PORT_BASE + 17)) $((PORT_BASE + 25)) $((PORT_BASE + 26)) $((PORT_BASE + 35)) $((PORT_BASE + 36)))
busy=()
for p in "${ALL_PORTS[@]}"; do listening "$p" && busy+=("$p"); done
if [[ ${#busy[@]} -gt 0 ]]; then
	ss -Hltnp | grep -E ":($(
		IFS='|'
		echo "${busy[*]}"
	))\b" >&2 || true
	die "ports already in use: ${busy[*]}; set PORT_BASE to a free range"
fi

# ------------------------------------------------------------------ configs

# The JWT. JWT_ALG=RS256 (the default): a fresh 2048-bit
# RSA key; HAProxy's jwt_verify reads its public key as PEM, lbd as a JWKS.
# JWT_ALG=HS256: a 32-byte random secret written as 64 hex characters (those
# ASCII bytes are the HMAC key for both). Either way one token valid for a
# day, and one signed with another key that every proxy must refuse.
JWT_ALG=${JWT_ALG:-RS256}
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
JWT_H=$(printf '{"alg":"%s","typ":"JWT","kid":"bench"}' "$JWT_ALG" | b64url)
JWT_P=$(printf '{"sub":"bench","aud":"bench","exp":%d}' $(($(date +%s) + 86400)) | b64url)
case $JWT_ALG in
HS256)
	SECRET_FILE=$WORK/conf/jwt-secret
	SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	printf '%s' "$SECRET" >"$SECRET_FILE"
	chmod 600 "$SECRET_FILE"
	sign() { openssl dgst -sha256 -hmac "$1" -binary | b64url; }
	JWT_S=$(printf '%s.%s' "$JWT_H" "$JWT_P" | sign "$SECRET")
	BAD_S=$(printf '%s.%s' "$JWT_H" "$JWT_P" | sign "x$SECRET")
	HAPROXY_KEY=$SECRET
	LBD_KEY="hmac_secret_file = \"$SECRET_FILE\""
	;;
RS256)
	KEY=$WORK/conf/jwt-rsa.key
	PUB=$WORK/conf/jwt-rsa.pub.pem
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$KEY" 2>/dev/null
	openssl pkey -in "$KEY" -pubout -out "$PUB"
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$WORK/conf/jwt-other.key" 2>/dev/null
	N=$(openssl rsa -in "$KEY" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
	printf '{"keys":[{"kty":"RSA","kid":"bench","alg":"RS256","use":"sig","n":"%s","e":"AQAB"}]}\n' "$N" >"$WORK/conf/jwks.json"
	sign() { openssl dgst -sha256 -sign "$1" -binary | b64url; }
	JWT_S=$(printf '%s.%s' "$JWT_H" "$JWT_P" | sign "$KEY")
	BAD_S=$(printf '%s.%s' "$JWT_H" "$JWT_P" | sign "$WORK/conf/jwt-other.key")
	SECRET=""
	HAPROXY_KEY=$PUB
	LBD_KEY="jwks_file = \"$WORK/conf/jwks.json\""
	;;
*) die "JWT_ALG must be RS256 or HS256, not '$JWT_ALG'" ;;
esac
TOKEN="$JWT_H.$JWT_P.$JWT_S"
printf '%s\n' "$TOKEN" >"$WORK/conf/jwt-token"
BAD_TOKEN="$JWT_H.$JWT_P.$BAD_S"

write_backend_conf() {
	local d=$WORK/nginx-backend p listens=""
	mkdir -p "$d/logs"
	for p in "${BACKENDS[@]}"; do listens+="        listen 127.0.0.1:$p backlog=4096;"$'\n'; done
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
$listens        location / {
            default_type text/plain;
            return 200 "ok";
        }
        # What the fwd probe reads: the forwarding headers as received.
        location = /fwd {
            default_type text/plain;
            return 200 "\$http_x_forwarded_for|\$http_x_forwarded_proto|\$http_x_forwarded_host|\$http_forwarded";
        }
    }
}
EOF
}

write_haproxy_conf() {
	cat >"$WORK/conf/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 6000
    pidfile $TMP/haproxy.pid

defaults
    mode http
    option http-keep-alive
    maxconn 6000
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    timeout http-keep-alive 5m

backend web
    balance roundrobin
    http-reuse always
    server s1 127.0.0.1:${BACKENDS[0]}
    server s2 127.0.0.1:${BACKENDS[1]}
    server s3 127.0.0.1:${BACKENDS[2]}

frontend plain
    bind 127.0.0.1:$(front_port haproxy plain)
    default_backend web

# The forwarding headers lbd sets on every request from an untrusted peer.
frontend fwd
    bind 127.0.0.1:$(front_port haproxy fwd)
    http-request del-header forwarded
    http-request del-header x-forwarded-for
    option forwardfor
    http-request set-header x-forwarded-proto http
    http-request set-header x-forwarded-host %[req.hdr(host)]
    default_backend web

# $JWT_ALG verification on every request: a bearer token, alg $JWT_ALG, a
# valid signature, and exp in the future (jwt_verify checks the signature
# only).
frontend jwt
    bind 127.0.0.1:$(front_port haproxy jwt)
    http-request deny deny_status 401 unless { req.hdr(authorization) -m beg "Bearer " }
    http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str $JWT_ALG }
    http-request deny deny_status 401 unless { http_auth_bearer,jwt_verify(txn.alg,"$HAPROXY_KEY") -m int 1 }
    http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
    default_backend web
EOF
}

write_nginx_proxy_conf() {
	local d=$WORK/nginx-proxy
	mkdir -p "$d/logs"
	cat >"$WORK/conf/nginx-proxy.conf" <<EOF
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
    upstream web {
        server 127.0.0.1:${BACKENDS[0]};
        server 127.0.0.1:${BACKENDS[1]};
        server 127.0.0.1:${BACKENDS[2]};
        keepalive 128;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$(front_port nginx plain) backlog=4096;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # The forwarding headers lbd sets on every request from an untrusted peer.
    server {
        listen 127.0.0.1:$(front_port nginx fwd) backlog=4096;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Forwarded "";
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$http_host;
        }
    }
}
EOF
}

write_lbd_conf() {
	cat >"$WORK/conf/lbd-http.toml" <<EOF
[global]
workers = 1
metrics_listen = ""
admin_socket = "$TMP/lbd-admin.sock"
log_level = "warn"
shutdown_timeout = "2s"

[[listener]]
name = "plain"
bind = "127.0.0.1:$(front_port lbd plain)"
protocol = "http"

  [[listener.route]]
  pool = "web"

[[listener]]
name = "jwt"
bind = "127.0.0.1:$(front_port lbd jwt)"
protocol = "http"

  [[listener.route]]
  pool = "web"
  auth = "bench-jwt"

[[auth]]
name = "bench-jwt"
type = "jwt"
algorithms = ["$JWT_ALG"]
$LBD_KEY

[[pool]]
name = "web"
algorithm = "wrr"

  [[pool.backend]]
  address = "127.0.0.1:${BACKENDS[0]}"

  [[pool.backend]]
  address = "127.0.0.1:${BACKENDS[1]}"

  [[pool.backend]]
  address = "127.0.0.1:${BACKENDS[2]}"

  [pool.health_check]
  type = "none"
EOF
}

write_backend_conf
write_haproxy_conf
write_nginx_proxy_conf
write_lbd_conf

# ------------------------------------------------------------------ proxies

declare -A PROXY_CMD
PROXY_CMD[haproxy]="taskset -c $PROXY_CPU haproxy -f $WORK/conf/haproxy.cfg -db"
PROXY_CMD[nginx]="taskset -c $PROXY_CPU nginx -p $WORK/nginx-proxy/ -e $WORK/nginx-proxy/logs/error.log -c $WORK/conf/nginx-proxy.conf -g 'daemon off;'"
PROXY_CMD[lbd]="GOMAXPROCS=1 taskset -c $PROXY_CPU $LBD run -c $WORK/conf/lbd-http.toml"

PROXY_PID=
PROXY_LOG=
PROXY_SEQ=0
LBD_SKIP_REASON=

# forwarded PORT: what the backend's /fwd saw through the proxy on PORT, for a
# client that sends forged forwarding headers.
forwarded() {
	curl -s -m 5 -H 'X-Forwarded-For: 6.6.6.6' -H 'Forwarded: for=6.6.6.6' -H 'X-Forwarded-Host: evil' \
		"http://127.0.0.1:$1/fwd" 2>/dev/null || true
}

# status PORT [TOKEN]: the HTTP status of one GET /, with "Bearer TOKEN".
status() {
	local h=()
	[[ -n ${2:-} ]] && h=(-H "Authorization: Bearer $2")
	curl -s -o /dev/null -m 5 -w '%{http_code}' "${h[@]}" "http://127.0.0.1:$1/" 2>/dev/null || true
}

# probe SYSTEM MODE: the proxy answers 200 (with the token for jwt) and, for
# jwt, 401 without a token and with a token signed with another key.
probe() {
	local port c
	port=$(front_port "$1" "$2")
	if [[ $2 == plain || $2 == fwd ]]; then
		c=$(status "$port")
		[[ $c == 200 ]] || {
			log "$1: GET / on $port answered '$c', not 200"
			return 1
		}
		[[ $2 == fwd ]] || return 0
		c=$(forwarded "$port")
		[[ $c == "127.0.0.1|http|127.0.0.1:$port|" ]] || {
			log "$1: the backend saw forwarding headers '$c' through $port, not '127.0.0.1|http|127.0.0.1:$port|'"
			return 1
		}
		return 0
	fi
	c=$(status "$port" "$TOKEN")
	[[ $c == 200 ]] || {
		log "$1: GET / with the token on $port answered '$c', not 200"
		return 1
	}
	c=$(status "$port")
	[[ $c == 401 ]] || {
		log "$1: GET / without a token on $port answered '$c', not 401"
		return 1
	}
	c=$(status "$port" "$BAD_TOKEN")
	[[ $c == 401 ]] || {
		log "$1: GET / with a wrongly signed token on $port answered '$c', not 401"
		return 1
	}
}

# start_proxy SYSTEM MODE: start a fresh proxy for one measurement, wait until
# it listens and answers as it should. direct starts nothing.
start_proxy() {
	local sys=$1 mode=$2 port
	PROXY_PID=
	[[ $sys == direct ]] && return 0
	port=$(front_port "$sys" "$mode")
	PROXY_SEQ=$((PROXY_SEQ + 1))
	PROXY_LOG=$WORK/raw/proxy-$PROXY_SEQ-$sys.log
	case $sys in
	haproxy) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" haproxy -f "$WORK/conf/haproxy.cfg" -db ;;
	nginx) start_bg "$PROXY_LOG" taskset -c "$PROXY_CPU" nginx -p "$WORK/nginx-proxy/" \
		-e "$WORK/nginx-proxy/logs/error.log" -c "$WORK/conf/nginx-proxy.conf" -g 'daemon off;' ;;
	lbd) start_bg "$PROXY_LOG" env GOMAXPROCS=1 taskset -c "$PROXY_CPU" "$LBD" run -c "$WORK/conf/lbd-http.toml" ;;
	esac
	PROXY_PID=$LAST_PID
	if ! wait_listen "$port" "$PROXY_PID" 10 || ! probe "$sys" "$mode"; then
		log "$sys did not come up on 127.0.0.1:$port; its output ($PROXY_LOG):"
		tail -n 20 "$PROXY_LOG" >&2 || true
		stop_pid "$PROXY_PID"
		PROXY_PID=
		return 1
	fi
	sleep 0.3 # let it finish starting before anything is measured
}

CLK_TCK=$(getconf CLK_TCK)

# ------------------------------------------------------------------ results

declare -A VAL     # "metric|system" -> values of all rounds, space-separated
declare -A CMDLINE # "mode|system" -> client command of the first round
ROWS=()            # per-round table rows

# load_begin; ...; load_end TAG SYSTEM ROUND: the proxy's CPU use during one
# load in L_CPU, that of every other process on its core in L_OTHER (flagged
# above 10%: a shared proxy core makes the figure worthless), and how busy
# CPU 0 was in L_CORE0.
load_begin() {
	L_T0=$(cpu_ticks "$PROXY_PID")
	L_C0=$(core_ticks "$PROXY_CPU")
	L_Z0=$(core_ticks "$CLIENT_CPU" busy)
	L_W0=$EPOCHREALTIME
}
load_end() {
	local t1 c1 z1 secs
	t1=$(cpu_ticks "$PROXY_PID")
	c1=$(core_ticks "$PROXY_CPU")
	z1=$(core_ticks "$CLIENT_CPU" busy)
	secs=$(elapsed "$L_W0")
	L_CPU="–"
	[[ $2 == direct ]] || L_CPU=$(pct "$L_T0" "$t1" "$secs")
	L_CORE0=$(pct "$L_Z0" "$z1" "$secs")
	L_OTHER=$(awk -v c=$((c1 - L_C0)) -v t=$((t1 - L_T0)) -v s="$secs" -v hz="$CLK_TCK" \
		'BEGIN{o = (c - t) / hz / s * 100; if (o < 0) o = 0; printf "%.0f", o}')
	if [[ $2 != direct && $L_OTHER -gt 10 ]]; then
		warn "$1/$2 round $3: other processes used ${L_OTHER}% of CPU $PROXY_CPU during the load, so this figure is unreliable"
	fi
}

# ---------------------------------------------------------------- workloads

start_backends() {
	nginx -t -p "$WORK/nginx-backend/" -e "$WORK/nginx-backend/logs/error.log" \
		-c "$WORK/conf/nginx-backend.conf" >"$WORK/raw/nginx-backend-test.log" 2>&1 ||
		die "nginx backend config invalid, see $WORK/raw/nginx-backend-test.log"
	start_bg "$WORK/raw/nginx-backend.log" taskset -c "$CLIENT_CPU" nginx -p "$WORK/nginx-backend/" \
		-e "$WORK/nginx-backend/logs/error.log" -c "$WORK/conf/nginx-backend.conf" -g 'daemon off;'
	BACKEND_PID=$LAST_PID
	local p
	for p in "${BACKENDS[@]}"; do
		wait_listen "$p" "$BACKEND_PID" 10 || die "nginx backend did not listen on $p, see $WORK/raw/nginx-backend.log"
		[[ $(status "$p") == 200 ]] || die "nginx backend on $p does not answer 200"
	done
}

# measure SYSTEM MODE ROUND
measure() {
	local sys=$1 mode=$2 r=$3 port out rps p50 p99 total non2xx errs
	port=$(front_port "$sys" "$mode")
	out=$WORK/raw/$mode-$sys-r$r.txt
	local cmd=(taskset -c "$CLIENT_CPU" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency)
	[[ $mode == jwt ]] && cmd+=(-H "Authorization: Bearer $TOKEN")
	cmd+=("http://127.0.0.1:$port/")
	set_cmd "$mode" "$sys" "$(show_cmd "${cmd[@]}" | sed "s|$TOKEN|\$(cat jwt-token)|")"
	load_begin
	if ! timeout $((WRK_SECS + 30)) "${cmd[@]}" >"$out" 2>&1; then
		warn "$mode/$sys round $r: wrk failed: $(tail -n 3 "$out" | tr '\n' ' ') (see $out)"
		return 1
	fi
	load_end "$mode" "$sys" "$r"
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
		warn "$mode/$sys round $r: ${non2xx:-0} non-2xx responses and ${errs:-0} socket errors in $total requests, so this figure is unreliable (see $out)"
	fi
	if ! p50=$(to_ms "$p50") || ! p99=$(to_ms "$p99"); then
		warn "$mode/$sys round $r: cannot parse wrk's latency distribution (see $out)"
		return 1
	fi
	rps=$(awk -v v="$rps" 'BEGIN{printf "%.0f", v}')
	add_val "$mode" "$sys" "$rps"
	add_val "$mode-p50" "$sys" "$p50"
	add_val "$mode-p99" "$sys" "$p99"
	ROWS+=("| $mode | $(sysname "$sys") | $r | $rps | $p50 | $p99 | $L_CPU | $L_OTHER | $L_CORE0 |")
	log "  $mode $sys: $rps req/s, p50 $p50 ms, p99 $p99 ms (proxy CPU ${L_CPU}%, CPU $CLIENT_CPU ${L_CORE0}%)"
}

# runs MODE SYSTEM: is SYSTEM measured in MODE?
runs() {
	[[ $1 == jwt && ($2 == direct || $2 == nginx) ]] && return 1
	[[ $1 == fwd && $2 == direct ]] && return 1
	return 0
}

run_one() {
	local sys=$1 mode=$2 r=$3
	runs "$mode" "$sys" || return 0
	if ! start_proxy "$sys" "$mode"; then
		if [[ $sys == lbd ]]; then
			LBD_SKIP_REASON="lbd did not start or did not answer as expected (see $PROXY_LOG)"
			warn "$LBD_SKIP_REASON; skipping lbd for the rest of the run"
			drop_system lbd
		else
			warn "$mode/$sys did not start or did not answer as expected in round $r (see $PROXY_LOG)"
		fi
		return 0
	fi
	quiet_check "$mode/$sys round $r"
	measure "$sys" "$mode" "$r" || true
	stop_proxy
	sleep "$COOLDOWN"
}

# ------------------------------------------------------------------- checks

if has_system lbd; then
	if [[ ! -x $LBD ]]; then
		LBD_SKIP_REASON="$LBD not found or not executable (run make build)"
		warn "$LBD_SKIP_REASON; skipping lbd"
		drop_system lbd
	elif ! "$LBD" check -c "$WORK/conf/lbd-http.toml" >"$WORK/raw/lbd-check.log" 2>&1; then
		LBD_SKIP_REASON="\`$LBD check\` rejects the HTTP config: $(sed "s|$WORK/conf/||" "$WORK/raw/lbd-check.log" | head -c 400 | paste -sd ';' | sed 's/;/; /g')"
		warn "$LBD_SKIP_REASON; skipping lbd"
		drop_system lbd
	fi
fi
if has_system haproxy; then
	haproxy -c -f "$WORK/conf/haproxy.cfg" >"$WORK/raw/haproxy-check.log" 2>&1 || {
		warn "HAProxy config rejected, skipping HAProxy: $(tail -n 2 "$WORK/raw/haproxy-check.log" | tr '\n' ' ')"
		drop_system haproxy
	}
fi
if has_system nginx; then
	nginx -t -p "$WORK/nginx-proxy/" -e "$WORK/nginx-proxy/logs/error.log" -c "$WORK/conf/nginx-proxy.conf" \
		>"$WORK/raw/nginx-proxy-test.log" 2>&1 || {
		warn "nginx proxy config rejected, skipping nginx: $(tail -n 2 "$WORK/raw/nginx-proxy-test.log" | tr '\n' ' ')"
		drop_system nginx
	}
fi
[[ ${#SYS_LIST[@]} -gt 0 ]] || die "no system left to measure"
SYSTEMS_RUN=("${SYS_LIST[@]}")

# --------------------------------------------------------------------- run

start_backends

log "workloads: ${MODES[*]}; systems: ${SYS_LIST[*]}; rounds: $ROUNDS; wrk ${WRK_SECS}s, $WRK_CONNS connections"
log "raw outputs: ${WORK#"$ROOT"/}"

for ((r = 1; r <= ROUNDS; r++)); do
	log "round $r of $ROUNDS"
	for mode in "${MODES[@]}"; do
		for sys in "${SYS_LIST[@]}"; do
			run_one "$sys" "$mode" "$r"
		done
	done
	alive "$BACKEND_PID" || die "the nginx backend exited, see $WORK/raw/nginx-backend.log"
done

# ------------------------------------------------------------------ report

declare -A MED
for mode in plain fwd jwt; do
	for m in "$mode" "$mode-p50" "$mode-p99"; do
		for s in direct haproxy nginx lbd; do MED[$m|$s]=$(median "${VAL[$m|$s]:-}"); done
	done
done

version_of() {
	local v=""
	case $1 in
	nginx) v=$(nginx -v 2>&1 | sed -n 's|.*nginx/||p') || true ;;
	haproxy) v=$(haproxy -v 2>/dev/null | awk 'NR == 1 {print $3}') || true ;;
	lbd) v=$("$LBD" version 2>/dev/null | head -n 1) || true ;;
	wrk) v=$(wrk -v 2>&1 | awk 'NR == 1 {print $2}') || true ;;
	esac
	echo "${v:-?}"
} 2>/dev/null

relpath() {
	if [[ -n $SECRET ]]; then
		sed "s|$WORK/conf/||g; s|$TMP/||g; s|$ROOT/||g; s|$SECRET|<secret>|g"
	else
		sed "s|$WORK/conf/||g; s|$TMP/||g; s|$ROOT/||g"
	fi
}

met() {
	if awk -v v="$1" -v t="$2" 'BEGIN{exit !(v >= t)}'; then echo "met"; else echo "**not met**"; fi
}

# cell METRIC SYSTEM MODE: the formatted median, or why there is none.
cell() {
	local m=$1 s=$2 mode=$3
	if ! runs "$mode" "$s"; then
		[[ $s == nginx ]] && echo "no JWT" || echo "n/a"
	elif [[ -z ${VAL[$mode|$s]:-} ]]; then
		echo "–"
	elif [[ $m == "$mode" ]]; then
		awk -v v="${MED[$m|$s]}" 'BEGIN{printf "%.1fk", v/1000}'
	else
		awk -v v="${MED[$m|$s]}" 'BEGIN{printf "%.3f", v}'
	fi
}

write_report() {
	local md=$1 mode m s cols=() v hdr sep line r_h r_n
	for s in direct haproxy nginx lbd; do
		if has_system "$s" || [[ -n ${VAL[plain|$s]:-}${VAL[fwd|$s]:-}${VAL[jwt|$s]:-} ]] || [[ $s == lbd && -n $LBD_SKIP_REASON ]]; then
			cols+=("$s")
		fi
	done
	{
		echo "# lbd HTTP benchmark: layer-7 proxying with keep-alive"
		echo
		echo "Written by \`bench/http.sh\` (\`bench/run.sh http\`, part of \`make bench\`) on $(date -u '+%Y-%m-%d %H:%M UTC')."
		echo
		echo "- Host: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo), $(nproc --all) CPUs, kernel $(uname -r)"
		echo "- Versions: HAProxy $(version_of haproxy), nginx $(version_of nginx), lbd $(
			if [[ -x $LBD ]]; then version_of lbd; else echo 'not built'; fi
		), wrk $(version_of wrk)"
		echo "- Backends: one nginx (\`worker_processes 1\`) listening on 127.0.0.1:${BACKENDS[0]}, :${BACKENDS[1]} and :${BACKENDS[2]}, answering \`ok\` (2 bytes) to every request. \`direct\` is wrk against the first port alone; every proxy balances round-robin over the three ports with keep-alive to them (HAProxy \`http-reuse always\`, nginx \`upstream keepalive 128\`, lbd's pooled connections)."
		echo "- Client: wrk, keep-alive, $WRK_CONNS connections, $WRK_THREADS thread(s), ${WRK_SECS} s, \`GET /\`."
		echo "- Each proxy runs alone on CPU $PROXY_CPU (\`taskset -c $PROXY_CPU\`; HAProxy \`nbthread 1\`, nginx \`worker_processes 1\`, lbd \`workers = 1\` with \`GOMAXPROCS=1\`), freshly started for every measurement; wrk and the backend share CPU $CLIENT_CPU."
		echo "- Workloads: ${MODES[*]}. \`plain\`: one catch-all route; HAProxy and nginx run bare, adding no forwarding header, while lbd always replaces the client's X-Forwarded-For and Forwarded and sets X-Forwarded-For, -Proto and -Host. \`fwd\`: the same route with HAProxy (\`option forwardfor\`, \`del-header\`, \`set-header\`) and nginx (\`proxy_set_header\`) set up to do that same work; before each fwd measurement every proxy is checked to deliver exactly \`X-Forwarded-For: 127.0.0.1\`, \`X-Forwarded-Proto: http\`, the client's Host and no Forwarded to the backend, for a client that sent forged ones (lbd serves fwd on its plain listener). \`jwt\`: the same route behind $JWT_ALG verification of a bearer token on every request (lbd \`[[auth]]\` with \`$(cut -d' ' -f1 <<<"$LBD_KEY")\`; HAProxy \`jwt_verify\` plus an \`exp\` check in \`http-request\` rules). Each proxy is first checked to answer 200, and for \`jwt\` 401 without a token and with a token signed by another key. nginx (open source) has no JWT verification and \`direct\` has no proxy, so neither runs \`jwt\`."
		echo "- Systems in run order: ${SYSTEMS_RUN[*]}; $ROUNDS round(s), systems interleaved within each round; the table shows the median."
		echo "- Run-to-run spread on this kind of machine is 10–20%: compare only within one run."
		[[ -n $LBD_SKIP_REASON ]] && echo "- **lbd was skipped:** $(relpath <<<"$LBD_SKIP_REASON")."
		echo
		hdr="| workload | metric |"
		sep="|---|---|"
		for s in "${cols[@]}"; do
			hdr+=" $(sysname "$s") |"
			sep+="---:|"
		done
		hdr+=" lbd/HAProxy | lbd/nginx |"
		sep+="---:|---:|"
		echo "$hdr"
		echo "$sep"
		for mode in "${MODES[@]}"; do
			for m in "$mode" "$mode-p50" "$mode-p99"; do
				case $m in *-p50) v="p50 latency (ms)" ;; *-p99) v="p99 latency (ms)" ;; *) v="requests/s" ;; esac
				line="| $mode | $v |"
				for s in "${cols[@]}"; do line+=" $(cell "$m" "$s" "$mode") |"; done
				r_h=$(ratio "${MED[$m|lbd]}" "${MED[$m|haproxy]}")
				r_n=$(ratio "${MED[$m|lbd]}" "${MED[$m|nginx]}")
				line+=" ${r_h:-–} | ${r_n:-–} |"
				echo "$line"
			done
		done
		echo
		echo "Higher is better for requests/s, lower for latency."
		echo
		echo "## Targets"
		echo
		echo "| target | measured | |"
		echo "|---|---|---|"
		# target_row MODE LABEL: the 0.8 x HAProxy row of one workload.
		target_row() {
			has_mode "$1" || return 0
			r_h=$(ratio "${MED[$1|lbd]}" "${MED[$1|haproxy]}")
			if [[ -n $r_h ]]; then
				echo "| $2 | $r_h × | $(met "$r_h" 0.8)$(awk -v v="$r_h" 'BEGIN{if (v >= 1.0) printf ", aim met"}') |"
			else
				echo "| $2 | – | not measured |"
			fi
		}
		target_row plain "plain: lbd requests/s ≥ 0.8 × HAProxy's (1.0 × is the aim)"
		target_row fwd "plain, every proxy setting the same forwarding headers (fwd): lbd requests/s ≥ 0.8 × HAProxy's"
		if has_mode jwt; then
			r_h=$(ratio "${MED[jwt|lbd]}" "${MED[jwt|haproxy]}")
			if [[ -n $r_h ]]; then
				echo "| with JWT: lbd requests/s ≥ HAProxy's with \`jwt_verify\` | $r_h × | $(met "$r_h" 1.0) |"
			else
				echo "| with JWT: lbd requests/s ≥ HAProxy's with \`jwt_verify\` | – | not measured |"
			fi
			echo
			if [[ $JWT_ALG != RS256 ]]; then
			echo "Issue 7 asks for RS256 tokens in the JWT run; this run uses $JWT_ALG (JWT_ALG=$JWT_ALG)."
		fi
		fi
		echo
		echo "## Every round"
		echo
		echo "| workload | system | round | requests/s | p50 ms | p99 ms | proxy CPU % | others on CPU $PROXY_CPU % | CPU $CLIENT_CPU busy % |"
		echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
		for v in "${ROWS[@]}"; do echo "$v"; done
		echo
		echo "Proxy CPU % is the proxy's user+system CPU time over the load's duration (100 = its whole core); \"others on CPU $PROXY_CPU\" is that of every other process on the proxy's core, which should be near 0; CPU $CLIENT_CPU busy % is everything on wrk's and the backend's core, softirq included (100 = saturated)."
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
		if [[ $JWT_ALG == RS256 ]]; then
			echo "# jwt-rsa.key: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048; jwks.json: its public key;"
			echo "# jwt-token: RS256 over {\"sub\":\"bench\",\"aud\":\"bench\",\"exp\":<now + 1 day>}, signed with openssl dgst -sha256 -sign"
		else
			echo "# jwt-secret: 32 random bytes as 64 hex characters; jwt-token: HS256 over"
			echo "# {\"sub\":\"bench\",\"aud\":\"bench\",\"exp\":<now + 1 day>}, signed with openssl dgst -sha256 -hmac"
		fi
		echo "# backend (CPU $CLIENT_CPU)"
		echo "taskset -c $CLIENT_CPU nginx -p nginx-backend/ -c nginx-backend.conf -g 'daemon off;'"
		echo "# proxies (CPU $PROXY_CPU), one fresh process per measurement"
		for s in "${cols[@]}"; do
			[[ $s == direct ]] && continue
			echo "${PROXY_CMD[$s]}   # $(sysname "$s")" | relpath
		done
		echo "# client (CPU $CLIENT_CPU)"
		for mode in "${MODES[@]}"; do
			for s in "${cols[@]}"; do
				[[ -n ${CMDLINE[$mode|$s]:-} ]] && echo "${CMDLINE[$mode|$s]}   # $(sysname "$s"), $mode" | relpath
			done
		done
		echo '```'
		echo
		echo "## Configurations"
		echo
		echo "The HAProxy configuration holds the HMAC secret, shown here as \`<secret>\`."
		for v in nginx-backend.conf haproxy.cfg nginx-proxy.conf lbd-http.toml; do
			case $v in
			haproxy.cfg) [[ " ${cols[*]} " == *" haproxy "* ]] || continue ;;
			nginx-proxy.conf) [[ " ${cols[*]} " == *" nginx "* ]] || continue ;;
			lbd-http.toml) [[ " ${cols[*]} " == *" lbd "* ]] || continue ;;
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
	case $1 in direct) echo '0x4d4d4d' ;; haproxy) echo '0xd95f02' ;; nginx) echo '0x2ca25f' ;; lbd) echo '0x2b6cb0' ;; *) echo '0x000000' ;; esac
}

# write_plot PNG: median requests/s per workload and system, min–max of the
# rounds as whiskers, grouped by workload.
write_plot() {
	local png=$1 dat=$WORK/http-rps.dat gp=$WORK/http.gp s mode n=0 x mm top=0 y tics=()
	{
		x=0
		for mode in "${MODES[@]}"; do
			local first=$x cnt=0
			for s in direct haproxy nginx lbd; do
				[[ -n ${VAL[$mode|$s]:-} ]] || continue
				mm=$(minmax "${VAL[$mode|$s]}")
				echo "$x \"$(sysname "$s")\" $(awk -v m="${MED[$mode|$s]}" -v r="$mm" 'BEGIN{split(r, a, " "); printf "%.2f %.2f %.2f", m/1000, a[1]/1000, a[2]/1000}') $(color_of "$s")"
				top=$(awk -v t="$top" -v r="$mm" 'BEGIN{split(r, a, " "); v = a[2] / 1000; print (v > t) ? v : t}')
				x=$((x + 1))
				cnt=$((cnt + 1))
				n=$((n + 1))
			done
			[[ $cnt -gt 0 ]] && tics+=("$(awk -v a="$first" -v b="$((x - 1))" -v m="$mode" 'BEGIN{printf "\"%s\" %.1f", m, (a + b) / 2}')")
			x=$((x + 1)) # a gap between workloads
		done
	} >"$dat"
	[[ $n -gt 0 ]] || return 0
	y=$(awk -v t="$top" 'BEGIN{printf "%.0f", t * 1.2 + 1}')
	local term="pngcairo size 900,560 font ',11'"
	gnuplot -e 'set terminal pngcairo' >/dev/null 2>&1 || term="png size 900,560"
	{
		echo "set terminal $term"
		echo "set output '$png'"
		printf 'set title "HTTP keep-alive: wrk -c%s → proxy on one core → 3 nginx ports (%s)\\nmedian of %s round(s), whiskers: min–max; higher is better"\n' "$WRK_CONNS" "$(date -u +%Y-%m-%d)" "$ROUNDS"
		echo "set style fill solid 0.85 border -1"
		echo "set boxwidth 0.8"
		echo "set ylabel 'thousand requests/s'"
		echo "set yrange [0:$y]"
		echo "set xrange [-0.7:$((x - 1)).3]"
		echo "set grid ytics"
		echo "set x2tics ($(
			IFS=,
			echo "${tics[*]}"
		)) scale 0"
		echo "plot '$dat' using 1:3:6:xtic(2) with boxes lc rgb variable notitle, \\"
		echo "  '' using 1:3:4:5 with yerrorbars lc rgb 'black' pt 7 ps 0.4 notitle, \\"
		echo "  '' using 1:5:(sprintf('%.1fk', \$3)) with labels offset 0,0.8 font ',10' notitle"
	} >"$gp"
	if gnuplot "$gp" >"$WORK/gnuplot.log" 2>&1; then
		log "plot: ${png#"$ROOT"/}"
	else
		warn "gnuplot failed, see $WORK/gnuplot.log"
	fi
}

mkdir -p "$RESULTS_DIR"
if command -v gnuplot >/dev/null; then
	write_plot "$(cd "$RESULTS_DIR" && pwd)/http.png"
fi
write_report "$RESULTS_DIR/http.md"
cp "$RESULTS_DIR/http.md" "$WORK/http.md"
log "table: $RESULTS_DIR/http.md"
echo
awk '/^\| workload \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/http.md"
echo
awk '/^\| target \|/ {t = 1} t && /^$/ {exit} t' "$RESULTS_DIR/http.md"
