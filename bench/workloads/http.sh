# Layer-7 HTTP (bench/run.sh [http | plain fwd jwt], or bench/http.sh [plain]
# [fwd] [jwt]): wrk with keep-alive against one nginx backend
# (worker_processes 1, answering "ok") listening on three ports: straight to
# the first port (direct), through HAProxy (mode http, balance roundrobin,
# http-reuse always), through nginx (proxy_pass to an upstream with
# keepalive 128) and through lbd (protocol = "http", a wrr pool, started
# with GOMAXPROCS=1).
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
#          HMAC secret file) against HAProxy (jwt_verify and an exp check in
#          http-request rules); nginx (open source) has no JWT, so its
#          column says so, and direct is not run
#
# HTTP settings (defaults in brackets):
#   WRK_SECS     wrk duration [DURATION or 8]
#   WRK_CONNS    wrk connections, keep-alive [64]
#   WRK_THREADS  wrk threads [1]
#   JWT_ALG      RS256 or HS256 [RS256]
#   ports        PORT_BASE+5..+7 (the backend), +15..+17 (HAProxy),
#                +25/+26 (nginx), +35/+36 (lbd)
# Sourced by bench/run.sh, which calls the http_* functions below.

http_settings() {
	WRK_SECS=${WRK_SECS:-${DURATION:-8}}
	WRK_CONNS=${WRK_CONNS:-64}
	WRK_THREADS=${WRK_THREADS:-1}
	JWT_ALG=${JWT_ALG:-RS256}
	local v
	for v in WRK_SECS WRK_CONNS WRK_THREADS; do need_int "$v"; done
	[[ $JWT_ALG == RS256 || $JWT_ALG == HS256 ]] || die "JWT_ALG must be RS256 or HS256, not '$JWT_ALG'"
	[[ ${#HTTP_MODES[@]} -gt 0 ]] || HTTP_MODES=(plain fwd jwt)
	local m keep=()
	for m in plain fwd jwt; do [[ " ${HTTP_MODES[*]} " == *" $m "* ]] && keep+=("$m"); done
	HTTP_MODES=("${keep[@]}")
}

http_packages() {
	command -v wrk >/dev/null || echo wrk
	command -v nginx >/dev/null || echo nginx
	has_system haproxy && ! command -v haproxy >/dev/null && echo haproxy
	command -v openssl >/dev/null || echo openssl
	command -v curl >/dev/null || echo curl
	[[ $JWT_ALG == RS256 ]] && ! command -v xxd >/dev/null && echo xxd
	return 0
}

http_tools() {
	echo wrk nginx openssl curl
	[[ $JWT_ALG == RS256 ]] && echo xxd
	has_system haproxy && echo haproxy
	return 0
}

http_prepare() {
	BACKENDS=($((PORT_BASE + 5)) $((PORT_BASE + 6)) $((PORT_BASE + 7)))
}

# http_front SYSTEM plain|fwd|jwt: the port wrk dials for that system. lbd
# always sets the forwarding headers, so its plain listener serves fwd too.
http_front() {
	local off=0
	case $2 in jwt) off=1 ;; fwd) off=2 ;; esac
	case $1 in
	direct) echo "${BACKENDS[0]}" ;;
	haproxy) echo $((PORT_BASE + 15 + off)) ;;
	nginx) echo $((PORT_BASE + 25 + off / 2)) ;;
	lbd) echo $((PORT_BASE + 35 + off % 2)) ;;
	esac
}

http_ports() {
	local p
	for p in "${BACKENDS[@]}"; do echo "tcp $p"; done
	for p in 15 16 17 25 26 35 36; do echo "tcp $((PORT_BASE + p))"; done
}

# http_jwt: the token every jwt request carries, and the keys. RS256: a
# fresh 2048-bit RSA key; HAProxy's jwt_verify reads its public key as PEM,
# lbd as a JWKS. HS256: a 32-byte random secret written as 64 hex characters
# (those ASCII bytes are the HMAC key for both). Either way one token valid
# for a day, and one signed with another key that every proxy must refuse.
http_jwt() {
	local c=$WDIR/conf h p s bad n
	b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
	h=$(printf '{"alg":"%s","typ":"JWT","kid":"bench"}' "$JWT_ALG" | b64url)
	p=$(printf '{"sub":"bench","aud":"bench","exp":%d}' $(($(date +%s) + 86400)) | b64url)
	if [[ $JWT_ALG == HS256 ]]; then
		SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
		printf '%s' "$SECRET" >"$c/jwt-secret"
		chmod 600 "$c/jwt-secret"
		s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)
		bad=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -hmac "x$SECRET" -binary | b64url)
		HAPROXY_KEY=$SECRET
		LBD_KEY="hmac_secret_file = \"$c/jwt-secret\""
		meta mask "$SECRET" "<secret>"
	else
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$c/jwt-rsa.key" 2>/dev/null
		openssl pkey -in "$c/jwt-rsa.key" -pubout -out "$c/jwt-rsa.pub.pem"
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$c/jwt-other.key" 2>/dev/null
		n=$(openssl rsa -in "$c/jwt-rsa.key" -noout -modulus | cut -d= -f2 | xxd -r -p | b64url)
		printf '{"keys":[{"kty":"RSA","kid":"bench","alg":"RS256","use":"sig","n":"%s","e":"AQAB"}]}\n' "$n" >"$c/jwks.json"
		s=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$c/jwt-rsa.key" -binary | b64url)
		bad=$(printf '%s.%s' "$h" "$p" | openssl dgst -sha256 -sign "$c/jwt-other.key" -binary | b64url)
		HAPROXY_KEY=$c/jwt-rsa.pub.pem
		LBD_KEY="jwks_file = \"$c/jwks.json\""
	fi
	TOKEN="$h.$p.$s"
	BAD_TOKEN="$h.$p.$bad"
	printf '%s\n' "$TOKEN" >"$c/jwt-token"
	meta mask "$TOKEN" '$(cat jwt-token)'
	meta set LBD_KEY "${LBD_KEY%% *}"
}

http_configs() {
	local c=$WDIR/conf d=$WDIR/nginx-backend p listens=""
	http_jwt
	mkdir -p "$d/logs" "$WDIR/nginx-proxy/logs"
	for p in "${BACKENDS[@]}"; do listens+="        listen 127.0.0.1:$p backlog=4096;"$'\n'; done
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

	cat >"$c/haproxy.cfg" <<EOF
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
    bind 127.0.0.1:$(http_front haproxy plain)
    default_backend web

# The forwarding headers lbd sets on every request from an untrusted peer.
frontend fwd
    bind 127.0.0.1:$(http_front haproxy fwd)
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
    bind 127.0.0.1:$(http_front haproxy jwt)
    http-request deny deny_status 401 unless { req.hdr(authorization) -m beg "Bearer " }
    http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.alg) -m str $JWT_ALG }
    http-request deny deny_status 401 unless { http_auth_bearer,jwt_verify(txn.alg,"$HAPROXY_KEY") -m int 1 }
    http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('\$.exp','int')
    http-request set-var(txn.now) date
    http-request deny deny_status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
    default_backend web
EOF

	d=$WDIR/nginx-proxy
	cat >"$c/nginx-proxy.conf" <<EOF
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
        listen 127.0.0.1:$(http_front nginx plain) backlog=4096;
        location / {
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # The forwarding headers lbd sets on every request from an untrusted peer.
    server {
        listen 127.0.0.1:$(http_front nginx fwd) backlog=4096;
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

	cat >"$c/lbd-http.toml" <<EOF
[global]
workers = 1
metrics_listen = ""
admin_socket = "$TMP/lbd-admin.sock"
log_level = "warn"
shutdown_timeout = "2s"

[[listener]]
name = "plain"
bind = "127.0.0.1:$(http_front lbd plain)"
protocol = "http"

  [[listener.route]]
  pool = "web"

[[listener]]
name = "jwt"
bind = "127.0.0.1:$(http_front lbd jwt)"
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
	meta conf '*' nginx-backend.conf
	meta conf haproxy haproxy.cfg
	meta conf nginx nginx-proxy.conf
	meta conf lbd lbd-http.toml
	meta steps "${HTTP_MODES[*]}"
	meta absent fwd direct "n/a"
	meta absent jwt direct "n/a"
	meta absent jwt nginx "no JWT"
	for p in WRK_SECS WRK_CONNS WRK_THREADS JWT_ALG; do meta set "$p" "${!p}"; done
	meta set BACKENDS "${BACKENDS[*]}"
}

http_check() {
	lbd_check "$WDIR/conf/lbd-http.toml" HTTP skip
	check_haproxy "$WDIR/conf/haproxy.cfg"
	check_nginx proxy "$WDIR/nginx-proxy" "$WDIR/conf/nginx-proxy.conf"
}

http_proxy() {
	case $1 in
	haproxy) PROXY_ARGV=(haproxy -f "$WDIR/conf/haproxy.cfg" -db) ;;
	nginx) nginx_argv "$WDIR/nginx-proxy" "$WDIR/conf/nginx-proxy.conf" && PROXY_ARGV=("${NGINX_ARGV[@]}") ;;
	lbd)
		PROXY_ENV=(GOMAXPROCS=1)
		PROXY_ARGV=("$LBD" run -c "$WDIR/conf/lbd-http.toml")
		;;
	esac
}

http_port() { echo "tcp $(http_front "$1" "$2")"; }

# http_status PORT [TOKEN]: the HTTP status of one GET /, with "Bearer TOKEN".
http_status() {
	local h=()
	[[ -n ${2:-} ]] && h=(-H "Authorization: Bearer $2")
	curl -s -o /dev/null -m 5 -w '%{http_code}' "${h[@]}" "http://127.0.0.1:$1/" 2>/dev/null || true
}

# http_probe SYSTEM MODE PORT: the proxy answers 200 (with the token for
# jwt); for fwd the backend sees exactly lbd's forwarding headers from a
# client that forged them; for jwt the proxy answers 401 without a token
# and with a token signed with another key.
http_probe() {
	local sys=$1 mode=$2 port=$3 c want
	if [[ $mode != jwt ]]; then
		c=$(http_status "$port")
		[[ $c == 200 ]] || {
			log "$sys: GET / on $port answered '$c', not 200"
			return 1
		}
		[[ $mode == fwd ]] || return 0
		c=$(curl -s -m 5 -H 'X-Forwarded-For: 6.6.6.6' -H 'Forwarded: for=6.6.6.6' -H 'X-Forwarded-Host: evil' \
			"http://127.0.0.1:$port/fwd" 2>/dev/null || true)
		want="127.0.0.1|http|127.0.0.1:$port|"
		[[ $c == "$want" ]] || {
			log "$sys: the backend saw forwarding headers '$c' through $port, not '$want'"
			return 1
		}
		return 0
	fi
	c=$(http_status "$port" "$TOKEN")
	[[ $c == 200 ]] || {
		log "$sys: GET / with the token on $port answered '$c', not 200"
		return 1
	}
	c=$(http_status "$port")
	[[ $c == 401 ]] || {
		log "$sys: GET / without a token on $port answered '$c', not 401"
		return 1
	}
	c=$(http_status "$port" "$BAD_TOKEN")
	[[ $c == 401 ]] || {
		log "$sys: GET / with a wrongly signed token on $port answered '$c', not 401"
		return 1
	}
}

http_backends() {
	local p
	nginx_argv "$WDIR/nginx-backend" "$WDIR/conf/nginx-backend.conf"
	"${NGINX_ARGV[@]:0:7}" -t >"$WDIR/raw/nginx-backend-test.log" 2>&1 ||
		die "nginx backend config invalid, see $WDIR/raw/nginx-backend-test.log"
	start_backend nginx "$WDIR/raw/nginx-backend.log" "${NGINX_ARGV[@]}"
	for p in "${BACKENDS[@]}"; do
		wait_listen "$p" "$LAST_PID" 10 || die "nginx backend did not listen on $p, see $WDIR/raw/nginx-backend.log"
		[[ $(http_status "$p") == 200 ]] || die "nginx backend on $p does not answer 200"
	done
}

# Every round, each workload in turn.
http_plan() {
	local r m
	for ((r = 1; r <= ROUNDS; r++)); do
		for m in "${HTTP_MODES[@]}"; do echo "$m $r"; done
	done
}

# http_runs MODE SYSTEM: is SYSTEM measured in MODE?
http_runs() {
	[[ $1 == jwt && ($2 == direct || $2 == nginx) ]] && return 1
	[[ $1 == fwd && $2 == direct ]] && return 1
	return 0
}

http_measure() {
	local mode=$1 sys=$2 r=$3 out rps total p50 p99 non2xx errs h=()
	out=$WDIR/raw/$mode-$sys-r$r.txt
	[[ $mode == jwt ]] && h=(-H "Authorization: Bearer $TOKEN")
	load "$mode" "$sys" "$r" "$WRK_SECS" "$out" wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${WRK_SECS}s" --latency "${h[@]}" \
		"http://127.0.0.1:$(http_front "$sys" "$mode")/" || return 1
	read -r rps total p50 p99 non2xx errs < <(wrk_stats "$out")
	if [[ $rps == - || $total == - || $total == 0 ]]; then
		warn "$mode/$sys round $r: no requests completed (see $out)"
		return 1
	fi
	if [[ $non2xx -gt 0 || $errs -gt 0 ]]; then
		warn "$mode/$sys round $r: $non2xx non-2xx responses and $errs socket errors in $total requests, so this figure is unreliable (see $out)"
	fi
	if [[ $p50 == - || $p99 == - ]]; then
		warn "$mode/$sys round $r: cannot parse wrk's latency distribution (see $out)"
		return 1
	fi
	emit "$mode" "$sys" "$r" rps "$rps"
	emit "$mode" "$sys" "$r" p50 "$p50"
	emit "$mode" "$sys" "$r" p99 "$p99"
	log "  $mode $sys: $rps req/s, p50 $p50 ms, p99 $p99 ms"
}
