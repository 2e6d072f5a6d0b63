package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The helpers below build small configs whose line numbers are easy to
// count: the listener is lines 1-4 and the pool lines after it, and the
// extra lines of each case land at a fixed place.

var (
	listenerLines = []string{`[[listener]]`, `name = "l"`, `bind = "127.0.0.1:8080"`, `pool = "p"`}
	poolLines     = []string{`[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`}
)

func doc(parts ...[]string) string {
	var all []string
	for _, p := range parts {
		all = append(all, p...)
	}
	return strings.Join(all, "\n") + "\n"
}

// inGlobal puts extra at lines 2... of a [global] table at line 1.
func inGlobal(extra ...string) string {
	return doc([]string{"[global]"}, extra, listenerLines, poolLines)
}

// inListener puts extra at lines 5... of the listener.
func inListener(extra ...string) string { return doc(listenerLines, extra, poolLines) }

// inPool puts extra at lines 7... of the pool, before its backend.
func inPool(extra ...string) string {
	return doc(listenerLines, poolLines[:2], extra, poolLines[2:])
}

// inBackend puts extra at lines 9... of the backend.
func inBackend(extra ...string) string { return doc(listenerLines, poolLines, extra) }

// inHealthCheck puts extra at lines 10... of a [pool.health_check] at line 9.
func inHealthCheck(extra ...string) string {
	return doc(listenerLines, poolLines, []string{"[pool.health_check]"}, extra)
}

func lines(l ...string) string { return doc(l) }

// want is one expected problem: its exact line and a part of its message.
type want struct {
	line int
	msg  string
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want []want
	}{
		// Syntax and structure.
		{"TOML syntax error", lines(`[[listener]]`, `name = "l`), []want{{2, "invalid TOML"}}},
		{"duplicate key is a syntax error", inListener(`name = "m"`), []want{{5, "invalid TOML: Key 'listener.name' has already been defined"}}},
		{"listener as a table", lines(`[listener]`, `name = "l"`), []want{{1, `"listener" must be an array of tables, written [[listener]], not a table`}}},
		{"pool as a scalar", doc([]string{`pool = 3`}, listenerLines), []want{{1, `"pool" must be an array of tables`}}},
		{"health_check as an array", doc(listenerLines, poolLines[:2], []string{`[[pool.health_check]]`}), []want{{7, `"pool.health_check" must be a table, not an array of tables`}}},
		{"global as a scalar", doc([]string{`global = "x"`}, listenerLines, poolLines), []want{{1, `"global" must be a table, not a string`}}},
		{"no listeners", doc(poolLines), []want{{0, "no listeners"}}},

		// Unknown keys.
		{"unknown top-level key", doc([]string{`bogus = 1`}, listenerLines, poolLines), []want{{1, `unknown key "bogus"`}}},
		{"unknown key in global", inGlobal(`worker = 2`), []want{{2, `unknown key "global.worker"`}}},
		{"unknown key in listener", inListener(`timeout = "3s"`), []want{{5, `unknown key "listener.timeout"`}}},
		{"unknown key in second listener", doc(listenerLines, []string{`[[listener]]`, `name = "m"`, `bind = "127.0.0.1:8081"`, `pool = "p"`, `colour = "red"`}, poolLines), []want{{9, `unknown key "listener.colour"`}}},
		{"unknown key in pool", inPool(`algo = "wrr"`), []want{{7, `unknown key "pool.algo"`}}},
		{"unknown key in backend", inBackend(`port = 80`), []want{{9, `unknown key "pool.backend.port"`}}},
		{"unknown key in health_check", inHealthCheck(`retries = 2`), []want{{10, `unknown key "pool.health_check.retries"`}}},
		{"unknown table reported once", doc(listenerLines, poolLines, []string{`[metrics]`, `listen = "x"`, `path = "/m"`}), []want{{9, `unknown key "metrics"`}}},
		{"unknown dotted key", inListener(`tls.cert = "x"`), []want{{5, `unknown key "listener.tls.cert"`}}},
		{"keys are case-sensitive", inListener(`Retries = 3`), []want{{5, `unknown key "listener.Retries" (keys are case-sensitive: did you mean "listener.retries"?)`}}},

		// Types.
		{"string for an integer", inGlobal(`workers = "4"`), []want{{2, "global: workers must be an integer, not a string"}}},
		{"float for an integer", inBackend(`weight = 1.5`), []want{{9, "weight must be an integer, not a float"}}},
		{"integer for a string", inListener(`connect_timeout = 3`), []want{{5, "connect_timeout must be a string, not an integer"}}},
		{"string for a boolean", inListener(`accept_proxy_protocol = "yes"`, `trusted_proxies = ["10.0.0.0/8"]`), []want{{5, "accept_proxy_protocol must be a boolean, not a string"}}},
		{"table for a string", inListener(`proxy_protocol = { v = 2 }`), []want{{5, "proxy_protocol must be a string, not a table"}}},
		{"trusted_proxies not an array", inListener(`accept_proxy_protocol = true`, `trusted_proxies = "10.0.0.0/8"`), []want{{5, "accept_proxy_protocol needs trusted_proxies"}, {6, "trusted_proxies must be an array of strings, not a string"}}},
		{"trusted_proxies holding integers", inListener(`trusted_proxies = [1]`), []want{{5, "trusted_proxies must be an array of strings, not an array holding integer"}}},

		// Global.
		{"negative workers", inGlobal(`workers = -1`), []want{{2, "workers -1 is out of range 0..1024"}}},
		{"log_level", inGlobal(`log_level = "verbose"`), []want{{2, `global: log_level "verbose" is not one of "debug", "info", "warn", "error"`}}},
		{"log_format", inGlobal(`log_format = "logfmt"`), []want{{2, `log_format "logfmt" is not one of "text", "json"`}}},
		{"shutdown_timeout syntax", inGlobal(`shutdown_timeout = "30"`), []want{{2, `shutdown_timeout "30" is not a duration`}}},
		{"negative shutdown_timeout", inGlobal(`shutdown_timeout = "-1s"`), []want{{2, `shutdown_timeout "-1s" must be greater than 0`}}},
		{"metrics_listen host name", inGlobal(`metrics_listen = "localhost:9090"`), []want{{2, `metrics_listen "localhost:9090" has no IP address: host names are not resolved`}}},
		{"admin_socket empty", inGlobal(`admin_socket = ""`), []want{{2, "admin_socket must not be empty"}}},
		{"admin_socket too long", inGlobal(`admin_socket = "/` + strings.Repeat("s", 107) + `"`), []want{{2, "a unix socket path may have at most 107"}}},

		// Listener names.
		{"listener name charset", lines(`[[listener]]`, `name = "front door"`, `bind = "127.0.0.1:1"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{2, `listener #1: name "front door" may hold only letters, digits, '-' and '_'`}}},
		{"listener name empty", lines(`[[listener]]`, `name = ""`, `bind = "127.0.0.1:1"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{2, `name "" must not be empty`}}},
		{"listener name missing", lines(`[[listener]]`, `bind = "127.0.0.1:1"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{1, "listener #1: name is missing"}}},
		{"duplicate listener names", doc(listenerLines, []string{`[[listener]]`, `name = "l"`, `bind = "127.0.0.1:8081"`, `pool = "p"`}, poolLines), []want{{6, `listener "l" is already defined at line 1`}}},

		// Listener bind.
		{"bind missing", lines(`[[listener]]`, `name = "l"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{1, `listener "l": bind is missing`}}},
		{"bind host name", lines(`[[listener]]`, `name = "l"`, `bind = "lb.example.com:443"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, `bind "lb.example.com:443" has no IP address: host names are not resolved`}}},
		{"bind IPv6 without brackets", lines(`[[listener]]`, `name = "l"`, `bind = "2001:db8::1:70000"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, `write an IPv6 address in brackets`}}},
		{"bind IPv6 address alone", lines(`[[listener]]`, `name = "l"`, `bind = "2001:db8::1:443"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, `bind "2001:db8::1:443" needs a port, as in "10.0.0.1:443" or "[2001:db8::1]:443"`}}},
		{"bind without port", lines(`[[listener]]`, `name = "l"`, `bind = "0.0.0.0"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, `bind "0.0.0.0" needs a port`}}},
		{"bind IPv6 without port", lines(`[[listener]]`, `name = "l"`, `bind = "[::]"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, `bind "[::]" needs a port`}}},
		// A bind with port 0 takes a port the kernel chooses (lbctl status
		// shows it); a backend needs a real one.
		{"backend port 0", lines(`[[listener]]`, `name = "l"`, `bind = "0.0.0.0:0"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:0"`), []want{{8, `address "10.0.0.1:0" needs a port in 1..65535`}}},
		{"bind port too large", lines(`[[listener]]`, `name = "l"`, `bind = "0.0.0.0:65536"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, "has a bad port"}}},
		{"duplicate bind", doc(listenerLines, []string{`[[listener]]`, `name = "m"`, `bind = "127.0.0.1:8080"`, `pool = "p"`}, poolLines), []want{{7, `listener "m": bind 127.0.0.1:8080 (tcp) is already used by the listener at line 1`}}},

		// Listener pool.
		{"unknown pool", lines(`[[listener]]`, `name = "l"`, `bind = "127.0.0.1:1"`, `pool = "q"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{4, `listener "l": pool "q" is not defined`}}},
		{"tcp listener without pool", lines(`[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`, `[[listener]]`, `name = "l"`, `bind = "127.0.0.1:1"`), []want{{5, `listener "l": pool is missing: a tcp listener needs the pool it feeds`}}},

		// Listener values.
		{"protocol unknown", inListener(`protocol = "sctp"`), []want{{5, `protocol "sctp" is not one of "tcp", "udp", "http"`}}},
		{"proxy_protocol", inListener(`proxy_protocol = "v3"`), []want{{5, `proxy_protocol "v3" is not one of "", "v1", "v2"`}}},
		{"accept_proxy_protocol without trusted_proxies", inListener(`accept_proxy_protocol = true`), []want{{5, "accept_proxy_protocol needs trusted_proxies"}}},
		{"accept_proxy_protocol with empty trusted_proxies", inListener(`accept_proxy_protocol = true`, `trusted_proxies = []`), []want{{5, "accept_proxy_protocol needs trusted_proxies"}}},
		{"trusted_proxies bad CIDR", inListener(`accept_proxy_protocol = true`, `trusted_proxies = ["10.0.0.0/33"]`), []want{{6, `trusted_proxies: "10.0.0.0/33" is not a CIDR prefix or IP address`}}},
		{"trusted_proxies host name", inListener(`trusted_proxies = ["proxy.example.com"]`), []want{{5, `"proxy.example.com" is not a CIDR prefix`}}},
		{"retries too many", inListener(`retries = 16`), []want{{5, "retries 16 is out of range 0..15"}}},
		{"retries negative", inListener(`retries = -1`), []want{{5, "retries -1 is out of range 0..15"}}},
		{"listener max_connections negative", inListener(`max_connections = -1`), []want{{5, "max_connections -1 is out of range"}}},
		{"connect_timeout without unit", inListener(`connect_timeout = "3"`), []want{{5, `connect_timeout "3" is not a duration: use Go syntax`}}},
		{"connect_timeout zero", inListener(`connect_timeout = "0s"`), []want{{5, `connect_timeout "0s" must be greater than 0`}}},
		{"idle_timeout negative", inListener(`idle_timeout = "-10m"`), []want{{5, `idle_timeout "-10m" must be greater than 0`}}},

		// Not implemented yet.
		{"udp_max_flows on tcp", inListener(`udp_max_flows = 100000`), []want{{5, "udp_max_flows applies to udp listeners only"}}},
		{"udp_responses on tcp", inListener(`udp_responses = 1`), []want{{5, "udp_responses applies to udp listeners only"}}},
		{"udp_max_flows zero", inListener(`protocol = "udp"`, `udp_max_flows = 0`), []want{{6, "udp_max_flows"}}},
		{"udp_responses negative", inListener(`protocol = "udp"`, `udp_responses = -1`), []want{{6, "udp_responses"}}},
		{"udp_reuse_sockets on tcp", inListener(`udp_reuse_sockets = true`), []want{{5, "udp_reuse_sockets applies to udp listeners only"}}},
		{"udp_reply_timeout on tcp", inListener(`udp_reply_timeout = "5s"`), []want{{5, "udp_reply_timeout applies to udp listeners only"}}},
		{"udp_reply_timeout not a duration", inListener(`protocol = "udp"`, `udp_reply_timeout = "5"`), []want{{6, `udp_reply_timeout "5" is not a duration`}}},
		{"udp_reuse_sockets without udp_responses", inListener(`protocol = "udp"`, `udp_reuse_sockets = true`), []want{{6, "udp_reuse_sockets needs udp_responses"}}},
		{"udp_reuse_sockets not a boolean", inListener(`protocol = "udp"`, `udp_responses = 1`, `udp_reuse_sockets = 1`), []want{{7, "udp_reuse_sockets must be a boolean"}}},
		{"udp with PROXY v1", inListener(`protocol = "udp"`, `proxy_protocol = "v1"`), []want{{6, `proxy_protocol "v1" cannot carry UDP`}}},
		{"udp accepting PROXY", inListener(`protocol = "udp"`, `accept_proxy_protocol = true`, `trusted_proxies = ["10.0.0.0/8"]`), []want{{6, "accept_proxy_protocol is not supported on udp listeners"}}},

		// Pools.
		{"pool name charset", lines(`[[listener]]`, `name = "l"`, `bind = "127.0.0.1:1"`, `pool = "p/q"`, `[[pool]]`, `name = "p/q"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{4, `pool "p/q" is not defined`}, {6, `pool #1: name "p/q" may hold only letters, digits, '-' and '_'`}}},
		{"pool name missing", doc(listenerLines, poolLines, []string{`[[pool]]`, `[[pool.backend]]`, `address = "10.0.0.2:80"`}), []want{{9, "pool #2: name is missing"}}},
		{"duplicate pool names", doc(listenerLines, poolLines, poolLines), []want{{10, `pool "p" is already defined at line 5`}}},
		{"pool without backends", doc(listenerLines, poolLines[:2]), []want{{5, `pool "p": no backends`}}},
		{"algorithm", inPool(`algorithm = "round_robin"`), []want{{7, `algorithm "round_robin" is not one of "maglev", "least_conn", "wrr", "p2c"`}}},
		{"hash", inPool(`hash = "dest_ip"`), []want{{7, `hash "dest_ip" is not one of "source_ip", "source_ip_port"`}}},
		{"maglev_table_size not prime", inPool(`maglev_table_size = 65536`), []want{{7, `pool "p": maglev_table_size 65536 is not prime (try 65537)`}}},
		{"maglev_table_size too small", inPool(`maglev_table_size = 2`), []want{{7, "maglev_table_size 2 is out of range 3..16777216"}}},
		{"maglev_table_size too large", inPool(`maglev_table_size = 16777259`), []want{{7, "out of range"}}},
		{"maglev_table_size not above backends", doc(listenerLines, poolLines[:2], []string{`maglev_table_size = 3`}, poolLines[2:], []string{`[[pool.backend]]`, `address = "10.0.0.2:80"`, `[[pool.backend]]`, `address = "10.0.0.3:80"`}), []want{{7, "maglev_table_size 3 must be larger than the number of backends (3)"}}},
		{"passive_failures negative", inPool(`passive_failures = -1`), []want{{7, "passive_failures -1 is out of range"}}},

		// Backends.
		{"address missing", doc(listenerLines, poolLines[:3], []string{`weight = 5`}), []want{{7, `pool "p": backend #1: address is missing`}}},
		{"address host name", doc(listenerLines, poolLines[:3], []string{`address = "gw1.internal:8443"`}), []want{{8, `pool "p": backend #1: address "gw1.internal:8443" has no IP address: host names are not resolved`}}},
		{"address without port", doc(listenerLines, poolLines[:3], []string{`address = "10.0.0.1"`}), []want{{8, `address "10.0.0.1" needs a port`}}},
		{"address unspecified", doc(listenerLines, poolLines[:3], []string{`address = "0.0.0.0:80"`}), []want{{8, `address "0.0.0.0:80": 0.0.0.0 is not a backend's address`}}},
		{"weight zero", inBackend(`weight = 0`), []want{{9, `pool "p": backend 10.0.0.1:80: weight 0 is out of range 1..10000`}}},
		{"weight too large", inBackend(`weight = 10001`), []want{{9, "weight 10001 is out of range 1..10000"}}},
		{"backend max_connections negative", inBackend(`max_connections = -5`), []want{{9, "max_connections -5 is out of range"}}},
		{"backend name charset", inBackend(`name = "gw 1"`), []want{{9, `name "gw 1" may hold only letters, digits, '-', '_', '.' and ':'`}}},
		{"backend name empty", inBackend(`name = ""`), []want{{9, "leave name out to use the address"}}},
		{"duplicate backend address", inBackend(`[[pool.backend]]`, `address = "10.0.0.1:80"`, `name = "other"`), []want{{10, `pool "p": backend address 10.0.0.1:80 is already used at line 7`}}},
		{"duplicate backend name", inBackend(`name = "gw"`, `[[pool.backend]]`, `address = "10.0.0.2:80"`, `name = "gw"`), []want{{12, `pool "p": backend name "gw" is already used at line 7`}}},
		{"backend name equal to another's address", inBackend(`[[pool.backend]]`, `address = "10.0.0.2:80"`, `name = "10.0.0.1:80"`), []want{{11, `backend name "10.0.0.1:80" is already used at line 7`}}},
		{"same address, other spelling", inBackend(`[[pool.backend]]`, `address = "[::ffff:10.0.0.1]:80"`, `[[pool.backend]]`, `address = "[2001:db8::1]:80"`, `[[pool.backend]]`, `address = "[2001:db8:0::1]:80"`), []want{{14, "backend address [2001:db8::1]:80 is already used at line 11"}}},

		// Health checks.
		{"health type", inHealthCheck(`type = "icmp"`), []want{{10, `pool "p": health_check: type "icmp" is not one of "tcp", "http", "none"`}}},
		{"health interval", inHealthCheck(`interval = "2 seconds"`), []want{{10, `interval "2 seconds" is not a duration`}}},
		{"health interval zero", inHealthCheck(`interval = "0s"`), []want{{10, `interval "0s" must be greater than 0`}}},
		{"health timeout above interval", inHealthCheck(`interval = "1s"`, `timeout = "1500ms"`), []want{{11, "timeout 1.5s must not exceed interval 1s"}}},
		{"health rise zero", inHealthCheck(`rise = 0`), []want{{10, "rise 0 is out of range 1..1000"}}},
		{"health fall zero", inHealthCheck(`fall = 0`), []want{{10, "fall 0 is out of range 1..1000"}}},
		{"health port", inHealthCheck(`port = 65536`), []want{{10, "port 65536 is out of range 0..65535"}}},
		{"health path", inHealthCheck(`type = "http"`, `path = "healthz"`), []want{{11, `path "healthz" must start with '/'`}}},
		{"health host", inHealthCheck(`type = "http"`, `host = "a b"`), []want{{11, `host "a b" must hold no spaces`}}},
		{"expect_status word", inHealthCheck(`expect_status = "2xx"`), []want{{10, `expect_status "2xx" must be a status code or a range`}}},
		{"expect_status signed", inHealthCheck(`expect_status = "+200"`), []want{{10, `expect_status "+200" must be a status code or a range`}}},
		{"expect_status reversed", inHealthCheck(`expect_status = "399-200"`), []want{{10, `expect_status "399-200" is an empty range`}}},
		{"expect_status out of range", inHealthCheck(`expect_status = "200-600"`), []want{{10, "holds a status outside 100..599"}}},
		{"health dotted key in pool", inPool(`health_check.type = "ping"`), []want{{7, `type "ping" is not one of`}}},

		// Positions in unusual layouts.
		{"inline array of listeners", lines(`listener = [`, `  { name = "a", bind = "127.0.0.1:1", pool = "p" },`, `  { name = "b", bind = "127.0.0.1:2", pool = "p", retries = 99 },`, `]`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`), []want{{3, `listener "b": retries 99 is out of range`}}},
		{"multi-line string hides a fake header", doc([]string{`[global]`, `state_file = """`, `[[listener]]`, `bogus = 1`, `"""`, `log_level = "x"`}, listenerLines, poolLines), []want{{6, `log_level "x" is not one of`}}},
		{"second pool's backend", doc(listenerLines, poolLines, []string{`[[pool]]`, `name = "q"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`, `[[pool.backend]]`, `address = "10.0.0.2:80"`, `weight = 0`}), []want{{15, `pool "q": backend 10.0.0.2:80: weight 0`}}},

		// Many problems at once: all are reported, in line order.
		{"every problem reported", lines(`[global]`, `workers = -1`, `[[listener]]`, `name = "l"`, `bind = "x"`, `pool = "nope"`, `retries = 99`, `[[pool]]`, `name = "p"`, `maglev_table_size = 4`, `[[pool.backend]]`, `address = "10.0.0.1:80"`, `weight = 0`),
			[]want{{2, "workers"}, {5, "bind"}, {6, "pool"}, {7, "retries"}, {10, "maglev_table_size"}, {13, "weight"}}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := Parse("t.toml", []byte(tt.in))
			if err == nil {
				t.Fatalf("Parse succeeded, want errors %v\ninput:\n%s", tt.want, tt.in)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config along with errors")
			}
			list, ok := errors.AsType[ErrorList](err)
			if !ok {
				t.Fatalf("error is %T, want ErrorList", err)
			}
			ws := tt.want
			if len(list) != len(ws) {
				t.Fatalf("got %d problems, want %d:\n%v\ninput:\n%s", len(list), len(ws), err, numbered(tt.in))
			}
			for i, w := range ws {
				e := list[i]
				if e.File != "t.toml" || e.Line != w.line || !strings.Contains(e.Msg, w.msg) {
					t.Errorf("problem %d:\n got %s\nwant t.toml:%d: ...%s...\ninput:\n%s", i, e, w.line, w.msg, numbered(tt.in))
				}
				prefix := fmt.Sprintf("t.toml:%d: ", w.line)
				if w.line == 0 {
					prefix = "t.toml: "
				}
				if !strings.HasPrefix(e.Error(), prefix) {
					t.Errorf("problem %d prints as %q, want prefix %q", i, e.Error(), prefix)
				}
			}
		})
	}
}

// numbered prefixes each line with its number, for failure messages.
func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimSuffix(s, "\n"), "\n") {
		fmt.Fprintf(&b, "%3d  %s\n", i+1, l)
	}
	return b.String()
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		desc  string
		in    string
		check func(*Config) string // returns what is wrong, or ""
	}{
		{desc: "minimal", in: doc(listenerLines, poolLines)},
		{desc: "shutdown_timeout zero", in: inGlobal(`shutdown_timeout = "0s"`)},
		{desc: "metrics disabled", in: inGlobal(`metrics_listen = ""`)},
		{desc: "IPv6 bind", in: lines(`[[listener]]`, `name = "l"`, `bind = "[::]:443"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `[[pool.backend]]`, `address = "[2001:db8::10]:8443"`)},
		{desc: "bare IP in trusted_proxies", in: inListener(`accept_proxy_protocol = true`, `trusted_proxies = ["192.0.2.1", "2001:db8::1", "10.0.0.0/8"]`)},
		{desc: "trusted_proxies without accept_proxy_protocol", in: inListener(`trusted_proxies = ["10.0.0.0/8"]`)},
		{desc: "weights at the bounds", in: inBackend(`weight = 1`, `[[pool.backend]]`, `address = "10.0.0.2:80"`, `weight = 10000`)},
		{desc: "retries at the bounds", in: inListener(`retries = 15`)},
		{desc: "smallest maglev table", in: inPool(`maglev_table_size = 3`)},
		{desc: "explicit tcp protocol", in: inListener(`protocol = "tcp"`)},
		{desc: "health check none", in: inHealthCheck(`type = "none"`)},
		{desc: "short interval shortens the default timeout", in: inHealthCheck(`interval = "500ms"`), check: func(c *Config) string {
			if h := c.Pools[0].HealthCheck; h.Timeout != 500*time.Millisecond {
				return fmt.Sprintf("timeout %v, want 500ms", h.Timeout)
			}
			return ""
		}},
		{desc: "single status", in: inHealthCheck(`type = "http"`, `expect_status = "204"`)},
		{desc: "same backend address in two pools", in: doc(listenerLines, poolLines, []string{`[[pool]]`, `name = "q"`, `[[pool.backend]]`, `address = "10.0.0.1:80"`})},
		{desc: "dotted keys", in: lines(`[[listener]]`, `name = "l"`, `bind = "127.0.0.1:1"`, `pool = "p"`, `[[pool]]`, `name = "p"`, `health_check.type = "http"`, `health_check.path = "/up"`, `backend = [{ address = "10.0.0.1:80" }]`)},
		{desc: "comments and blank lines", in: "# lbd\n\n" + doc(listenerLines, poolLines) + "\n# end\n"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := Parse("t.toml", []byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v\ninput:\n%s", err, numbered(tt.in))
			}
			if cfg == nil {
				t.Fatal("Parse returned no config and no error")
			}
			if tt.check != nil {
				if msg := tt.check(cfg); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}
