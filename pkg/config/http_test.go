package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Key files that exist, for the http tests.
const (
	testJWKS   = "testdata/http/jwks.json"
	testSecret = "testdata/http/hmac.secret"
	testCert   = "testdata/http/cert.pem"
	testKey    = "testdata/http/key.pem"
)

// The http helpers, like those in validate_test.go, put the lines of each
// case at fixed places. The http listener is lines 1-4, its route starts at
// line 5, and the pool and an auth block "a" follow.

var (
	httpListenerLines = []string{`[[listener]]`, `name = "api"`, `bind = "127.0.0.1:8080"`, `protocol = "http"`}
	httpRouteLines    = []string{`[[listener.route]]`, `pool = "p"`}
	authLines         = []string{`[[auth]]`, `name = "a"`, `type = "jwt"`}
	jwtKeyLines       = []string{`algorithms = ["RS256"]`, `jwks_file = "` + testJWKS + `"`}
)

// inHTTPListener puts extra at lines 5... of the http listener, before its
// route.
func inHTTPListener(extra ...string) string {
	return doc(httpListenerLines, extra, httpRouteLines, poolLines, authLines, jwtKeyLines)
}

// inRoute puts extra at lines 7... of the listener's route.
func inRoute(extra ...string) string {
	return doc(httpListenerLines, httpRouteLines, extra, poolLines, authLines, jwtKeyLines)
}

// inAuth puts extra at lines 14... of the auth block "a" at line 11, which
// has no algorithms or key file of its own.
func inAuth(extra ...string) string {
	return doc(httpListenerLines, httpRouteLines, poolLines, authLines, extra)
}

// parseProblems parses in and checks its problems against ws, exactly.
func parseProblems(t *testing.T, in string, ws []want) {
	t.Helper()
	cfg, err := Parse("t.toml", []byte(in))
	if err == nil {
		t.Fatalf("Parse succeeded, want errors %v\ninput:\n%s", ws, numbered(in))
	}
	if cfg != nil {
		t.Errorf("Parse returned a config along with errors")
	}
	list, ok := errors.AsType[ErrorList](err)
	if !ok {
		t.Fatalf("error is %T, want ErrorList", err)
	}
	if len(list) != len(ws) {
		t.Fatalf("got %d problems, want %d:\n%v\ninput:\n%s", len(list), len(ws), err, numbered(in))
	}
	for i, w := range ws {
		e := list[i]
		if e.File != "t.toml" || e.Line != w.line || !strings.Contains(e.Msg, w.msg) {
			t.Errorf("problem %d:\n got %s\nwant t.toml:%d: ...%s...\ninput:\n%s", i, e, w.line, w.msg, numbered(in))
		}
	}
}

func TestHTTPParseErrors(t *testing.T) {
	tests := []struct {
		desc string
		in   string
		want []want
	}{
		// Listener.
		{"no routes", doc(httpListenerLines, poolLines), []want{{1, `listener "api": no routes: an http listener needs at least one [[listener.route]]`}}},
		{"pool on http listener", inHTTPListener(`pool = "p"`), []want{{5, `listener "api": pool does not apply to http listeners`}}},
		{"proxy_protocol on http listener", inHTTPListener(`proxy_protocol = "v2"`), []want{{5, "proxy_protocol is not supported on http listeners"}}},
		{"route on tcp listener", doc(listenerLines, httpRouteLines, poolLines), []want{{5, `listener "l": [[listener.route]] applies to http listeners only`}}},
		{"tls on tcp listener", inListener(`tls_cert_file = "`+testCert+`"`, `tls_key_file = "`+testKey+`"`), []want{{5, "tls_cert_file applies to http listeners only"}, {6, "tls_key_file applies to http listeners only"}}},
		{"access_log on udp listener", inListener(`protocol = "udp"`, `access_log = true`), []want{{6, "access_log applies to http listeners only"}}},
		{"access_log not a boolean", inHTTPListener(`access_log = "yes"`), []want{{5, "access_log must be a boolean, not a string"}}},
		{"http timeouts on a tcp listener", inListener(`header_timeout = "5s"`, `read_timeout = "5s"`, `write_timeout = "5s"`, `tunnel_timeout = "5s"`), []want{
			{5, "header_timeout applies to http listeners only"}, {6, "read_timeout applies to http listeners only"}, {7, "write_timeout applies to http listeners only"},
			{8, "tunnel_timeout applies to http listeners only"}}},
		{"tunnel_timeout negative", inHTTPListener(`tunnel_timeout = "-1s"`), []want{{5, `tunnel_timeout`}}},
		{"http sizes on a udp listener", inListener(`protocol = "udp"`, `max_header_bytes = 8192`, `max_body_bytes = 1`), []want{
			{6, "max_header_bytes applies to http listeners only"}, {7, "max_body_bytes applies to http listeners only"}}},
		{"header_timeout zero", inHTTPListener(`header_timeout = "0s"`), []want{{5, `header_timeout`}}},
		{"read_timeout not a duration", inHTTPListener(`read_timeout = "30"`), []want{{5, `read_timeout`}}},
		{"max_header_bytes too small", inHTTPListener(`max_header_bytes = 100`), []want{{5, "max_header_bytes 100 is out of range 1024..1048576"}}},
		{"max_body_bytes zero", inHTTPListener(`max_body_bytes = 0`), []want{{5, "max_body_bytes 0 is out of range 1..268435456"}}},
		{"max_body_bytes too big", inHTTPListener(`max_body_bytes = 1073741824`), []want{{5, "max_body_bytes 1073741824 is out of range 1..268435456"}}},
		{"path_normalization unknown", inHTTPListener(`path_normalization = "loose"`), []want{{5, `path_normalization "loose" is not one of "strict", "merge_slashes", "off"`}}},
		{"path_normalization on a tcp listener", inListener(`path_normalization = "off"`), []want{{5, "path_normalization applies to http listeners only"}}},
		{"strip_headers not an array", inHTTPListener(`strip_headers = "X-A"`), []want{{5, "strip_headers must be an array of strings"}}},
		{"strip_headers bad name", inHTTPListener(`strip_headers = ["X A"]`), []want{{5, `strip_headers: "X A" is not a valid header name`}}},
		{"strip_headers Host", inHTTPListener(`strip_headers = ["host"]`), []want{{5, "strip_headers: Host cannot be listed: lbd handles it itself"}}},
		{"strip_headers X-Forwarded", inHTTPListener(`strip_headers = ["X-Forwarded-Prefix"]`), []want{{5, "strip_headers: X-Forwarded-Prefix cannot be listed"}}},
		{"strip_headers twice", inHTTPListener(`strip_headers = ["X-A", "x-a"]`), []want{{5, "strip_headers: X-A is listed twice"}}},
		{"source_prefix_v6 out of range", inHTTPListener(`source_prefix_v6 = 129`), []want{{5, "source_prefix_v6 129 is out of range 1..128"}}},
		{"source_prefix_v6 on a udp listener", inListener(`protocol = "udp"`, `source_prefix_v6 = 64`), []want{{6, "source_prefix_v6 applies to http listeners only"}}},
		{"accept_proxy_protocol without trusted_proxies", inHTTPListener(`accept_proxy_protocol = true`), []want{{5, "accept_proxy_protocol needs trusted_proxies"}}},
		{"cert without key", inHTTPListener(`tls_cert_file = "` + testCert + `"`), []want{{5, "tls_cert_file needs tls_key_file: set both to terminate TLS, or neither"}}},
		{"key without cert", inHTTPListener(`tls_key_file = "` + testKey + `"`), []want{{5, "tls_key_file needs tls_cert_file"}}},
		{"cert file missing", inHTTPListener(`tls_cert_file = "testdata/http/nope.pem"`, `tls_key_file = "`+testKey+`"`), []want{{5, `tls_cert_file "testdata/http/nope.pem": no such file or directory`}}},
		{"key file is a directory", inHTTPListener(`tls_cert_file = "`+testCert+`"`, `tls_key_file = "testdata/http"`), []want{{6, `tls_key_file "testdata/http" is a directory`}}},
		{"http and tcp on one port", doc(httpListenerLines, httpRouteLines, []string{`[[listener]]`, `name = "t"`, `bind = "127.0.0.1:8080"`, `pool = "p"`}, poolLines), []want{{9, `bind 127.0.0.1:8080 (tcp) is already used by the listener at line 1`}}},

		// Route.
		{"route without pool", doc(httpListenerLines, []string{`[[listener.route]]`, `host = "a.example.com"`}, poolLines), []want{{5, `listener "api": route #1: pool is missing`}}},
		{"route pool undefined", doc(httpListenerLines, []string{`[[listener.route]]`, `pool = "nope"`}, poolLines), []want{{6, `route #1: pool "nope" is not defined`}}},
		{"second route", doc(httpListenerLines, httpRouteLines, []string{`[[listener.route]]`, `pool = "q"`}, poolLines), []want{{8, `route #2: pool "q" is not defined`}}},
		{"bad host", inRoute(`host = "a b.example.com"`), []want{{7, `route #1: bad host: "a b.example.com" has byte ' '`}}},
		{"host with port", inRoute(`host = "a.example.com:443"`), []want{{7, "the port is not part of a route's host"}}},
		{"bad wildcard", inRoute(`host = "*example.com"`), []want{{7, "bad host"}}},
		{"host not a string", inRoute(`host = 3`), []want{{7, "host must be a string, not an integer"}}},
		{"path_prefix without slash", inRoute(`path_prefix = "v1/"`), []want{{7, `route #1: bad path_prefix: "v1/" does not start with "/"`}}},
		{"path_prefix control byte", inRoute(`path_prefix = "/v1\t"`), []want{{7, "has a control byte"}}},
		{"host and path both bad", inRoute(`host = "a..b"`, `path_prefix = "x"`), []want{{7, "bad host"}, {8, "bad path_prefix"}}},
		{"headers not a table", inRoute(`headers = "X-Tenant: acme"`), []want{{7, `headers must be a table of strings, such as { "X-Tenant" = "acme" }, not a string`}}},
		{"header value not a string", inRoute(`headers = { "X-Tenant" = 1 }`), []want{{7, `headers.X-Tenant must be a string, not an integer`}}},
		{"header value on its own line", inRoute(`headers = {`, `  "X-A" = "a",`, `  "X-B" = true,`, `}`), []want{{9, `headers.X-B must be a string, not a boolean`}}},
		{"header name not a token", inRoute(`headers = { "X Tenant" = "acme" }`), []want{{7, `bad header: name "X Tenant" is not an HTTP token`}}},
		{"header empty value", inRoute(`headers = { "X-Tenant" = "" }`), []want{{7, `bad header: "X-Tenant" has an empty value`}}},
		{"header twice in other case", inRoute(`headers = { "X-Tenant" = "a", "x-tenant" = "b" }`), []want{{7, "is given twice"}}},
		{"auth undefined", inRoute(`auth = "nope"`), []want{{7, `route #1: auth "nope" is not defined: it must name an [[auth]] block`}}},
		{"auth not a string", inRoute(`auth = true`), []want{{7, "auth must be a string, not a boolean"}}},

		// Rate limit.
		{"rate_limit not a table", inRoute(`rate_limit = 100`), []want{{7, "rate_limit must be a table, such as { rate = 100.0, burst = 200, key = \"client_ip\" }, not an integer"}}},
		{"rate missing", inRoute(`rate_limit = { burst = 5 }`), []want{{7, "rate_limit: rate is missing"}}},
		{"rate zero", inRoute(`rate_limit = { rate = 0.0 }`), []want{{7, "rate_limit: rate 0 must be a finite number greater than 0"}}},
		{"rate negative", inRoute(`rate_limit = { rate = -1 }`), []want{{7, "rate -1 must be a finite number greater than 0"}}},
		{"rate infinite", inRoute(`rate_limit = { rate = inf }`), []want{{7, "rate +Inf must be a finite number"}}},
		{"rate nan", inRoute(`rate_limit = { rate = nan }`), []want{{7, "rate NaN must be a finite number"}}},
		{"rate a string", inRoute(`rate_limit = { rate = "100/s" }`), []want{{7, "rate_limit: rate must be a number, not a string"}}},
		{"burst zero", inRoute(`rate_limit = { rate = 1.0, burst = 0 }`), []want{{7, "rate_limit: burst 0 is out of range 1..2147483647"}}},
		{"burst a float", inRoute(`rate_limit = { rate = 1.0, burst = 2.5 }`), []want{{7, "rate_limit: burst must be an integer, not a float"}}},
		{"unknown key in rate_limit", inRoute(`rate_limit = { rate = 1.0, per = "1m" }`), []want{{7, `unknown key "per" in rate_limit: it takes rate, burst and key`}}},
		{"rate_limit keys on their own lines", inRoute(`rate_limit = {`, `  rate = 1.0,`, `  burst = -3,`, `  key = 7,`, `  brust = 4,`, `}`), []want{{9, "burst -3 is out of range"}, {10, "key must be a string, not an integer"}, {11, `unknown key "brust"`}}},
		{"bad key", inRoute(`rate_limit = { rate = 1.0, key = "ip" }`), []want{{7, `rate_limit: bad key "ip": want client_ip, route, header:NAME or claim:NAME`}}},
		{"bad header key", inRoute(`rate_limit = { rate = 1.0, key = "header:X Y" }`), []want{{7, "the header name is not an HTTP token"}}},
		{"empty claim key", inRoute(`auth = "a"`, `rate_limit = { rate = 1.0, key = "claim:" }`), []want{{8, "empty claim name"}}},
		{"claim key without auth", inRoute(`rate_limit = { rate = 1.0, key = "claim:sub" }`), []want{{7, `rate_limit: key "claim:sub" needs the route to have auth`}}},

		// Auth.
		{"auth name missing", doc(httpListenerLines, httpRouteLines, poolLines, []string{`[[auth]]`, `type = "jwt"`}, jwtKeyLines), []want{{11, "auth #1: name is missing"}}},
		{"auth bad name", doc(httpListenerLines, httpRouteLines, poolLines, []string{`[[auth]]`, `name = "a b"`, `type = "jwt"`}, jwtKeyLines), []want{{12, `auth #1: name "a b" may hold only`}}},
		{"auth defined twice", inAuth(append(jwtKeyLines, append(authLines, jwtKeyLines...)...)...), []want{{17, `auth "a" is already defined at line 11`}}},
		{"auth type missing", doc(httpListenerLines, httpRouteLines, poolLines, []string{`[[auth]]`, `name = "a"`}, jwtKeyLines), []want{{11, `auth "a": type is missing: the only type is "jwt"`}}},
		{"auth type unknown", doc(httpListenerLines, httpRouteLines, poolLines, []string{`[[auth]]`, `name = "a"`, `type = "basic"`}, jwtKeyLines), []want{{13, `type "basic" is not one of "jwt"`}}},
		{"algorithms missing", inAuth(`jwks_file = "` + testJWKS + `"`), []want{{11, `auth "a": algorithms is missing`}}},
		{"algorithms empty", inAuth(`algorithms = []`, `jwks_file = "`+testJWKS+`"`), []want{{14, "algorithms must not be empty"}}},
		{"algorithms not strings", inAuth(`algorithms = "RS256"`, `jwks_file = "`+testJWKS+`"`), []want{{14, "algorithms must be an array of strings, not a string"}}},
		{"algorithm none", inAuth(`algorithms = ["RS256", "none"]`, `jwks_file = "`+testJWKS+`"`), []want{{14, `algorithms: "none" is never accepted`}}},
		{"algorithm None", inAuth(`algorithms = ["NONE"]`, `jwks_file = "`+testJWKS+`"`), []want{{14, `algorithms: "NONE" is never accepted`}}},
		{"algorithm unknown", inAuth(`algorithms = ["RS255"]`, `jwks_file = "`+testJWKS+`"`), []want{{14, `algorithms: "RS255" is not one of RS256,`}}},
		{"algorithm wrong case", inAuth(`algorithms = ["rs256"]`, `jwks_file = "`+testJWKS+`"`), []want{{14, "(names are case-sensitive)"}}},
		{"algorithm twice", inAuth(`algorithms = ["RS256", "RS256"]`, `jwks_file = "`+testJWKS+`"`), []want{{14, `"RS256" is listed twice`}}},
		{"no key file", inAuth(`algorithms = ["RS256"]`), []want{{11, "one of jwks_file and hmac_secret_file is required"}}},
		{"both key files", inAuth(`algorithms = ["RS256"]`, `jwks_file = "`+testJWKS+`"`, `hmac_secret_file = "`+testSecret+`"`), []want{{16, "set only one of jwks_file and hmac_secret_file"}}},
		{"jwks file missing", inAuth(`algorithms = ["RS256"]`, `jwks_file = "testdata/http/nope.json"`), []want{{15, `jwks_file "testdata/http/nope.json": no such file or directory`}}},
		{"secret file missing", inAuth(`algorithms = ["HS256"]`, `hmac_secret_file = "testdata/http/nope"`), []want{{15, `hmac_secret_file "testdata/http/nope": no such file or directory`}}},
		{"HS256 with jwks", inAuth(`algorithms = ["RS256", "HS256"]`, `jwks_file = "`+testJWKS+`"`), []want{{14, "algorithm HS256 needs hmac_secret_file"}}},
		{"RS256 with secret", inAuth(`algorithms = ["HS256", "ES256"]`, `hmac_secret_file = "`+testSecret+`"`), []want{{14, "algorithm ES256 needs a jwks_file"}}},
		{"leeway bad", inAuth(append(jwtKeyLines, `leeway = "30"`)...), []want{{16, `leeway "30" is not a duration`}}},
		{"leeway negative", inAuth(append(jwtKeyLines, `leeway = "-1s"`)...), []want{{16, `leeway "-1s" must be greater than 0`}}},
		{"issuer not a string", inAuth(append(jwtKeyLines, `issuer = 1`)...), []want{{16, "issuer must be a string, not an integer"}}},
		{"forward_claims not a table", inAuth(append(jwtKeyLines, `forward_claims = ["sub"]`)...), []want{{16, `forward_claims must be a table of strings, such as { sub = "X-User-Id" }, not an array`}}},
		{"forward_claims value not a string", inAuth(append(jwtKeyLines, `forward_claims = { sub = 1 }`)...), []want{{16, "forward_claims.sub must be a string, not an integer"}}},
		{"forward_claims bad header", inAuth(append(jwtKeyLines, `forward_claims = {`, `  sub = "X-User-Id",`, `  email = "X User",`, `}`)...), []want{{18, `forward_claims: "X User" is not a valid header name (claim "email")`}}},
		{"forward_claims empty claim", inAuth(append(jwtKeyLines, `forward_claims = { "" = "X-A" }`)...), []want{{16, "forward_claims: empty claim name"}}},
		{"forward_claims framing header", inAuth(append(jwtKeyLines, `forward_claims = { sub = "authorization" }`)...), []want{{16, "header Authorization may not be set from a claim"}}},
		{"forward_claims one header twice", inAuth(append(jwtKeyLines, `forward_claims = { a = "X-Id", b = "x-id" }`)...), []want{{16, `forward_claims: claims "a" and "b" both set header X-Id`}}},
		{"unknown key in auth", inAuth(append(jwtKeyLines, `kid = "k1"`)...), []want{{16, `unknown key "auth.kid"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) { parseProblems(t, tt.in, tt.want) })
	}
}

func TestHTTPParseAccepts(t *testing.T) {
	tests := []struct {
		desc  string
		in    string
		check func(*Config) string // returns what is wrong, or ""
	}{
		{desc: "minimal", in: inRoute(), check: func(c *Config) string {
			l := c.Listeners[0]
			want := []Route{{Pool: "p", Line: 5}}
			if l.Protocol != ProtocolHTTP || l.Pool != "" || !reflect.DeepEqual(l.Routes, want) || l.AccessLog || l.TLSCertFile != "" {
				return fmt.Sprintf("listener %+v", l)
			}
			return ""
		}},
		{desc: "TLS and access log", in: inHTTPListener(`tls_cert_file = "`+testCert+`"`, `tls_key_file = "`+testKey+`"`, `access_log = true`), check: func(c *Config) string {
			if l := c.Listeners[0]; l.TLSCertFile != testCert || l.TLSKeyFile != testKey || !l.AccessLog {
				return fmt.Sprintf("listener %+v", l)
			}
			return ""
		}},
		{desc: "empty tls files mean none", in: inHTTPListener(`tls_cert_file = ""`, `tls_key_file = ""`)},
		{desc: "accept_proxy_protocol on http", in: inHTTPListener(`accept_proxy_protocol = true`, `trusted_proxies = ["10.0.0.0/8"]`, `max_connections = 100`)},
		{desc: "trusted_proxies alone on http", in: inHTTPListener(`trusted_proxies = ["10.0.0.0/8"]`)},
		{desc: "http and udp on one port", in: doc(httpListenerLines, httpRouteLines, []string{`[[listener]]`, `name = "u"`, `bind = "127.0.0.1:8080"`, `protocol = "udp"`, `pool = "p"`}, poolLines)},
		{desc: "burst defaults to rate rounded up", in: inRoute(`rate_limit = { rate = 2.5 }`), check: func(c *Config) string {
			want := &RateLimit{Rate: 2.5, Burst: 3, Key: "client_ip"}
			if got := c.Listeners[0].Routes[0].RateLimit; !reflect.DeepEqual(got, want) {
				return fmt.Sprintf("RateLimit = %+v, want %+v", got, want)
			}
			return ""
		}},
		{desc: "tiny rate gets burst 1", in: inRoute(`rate_limit = { rate = 0.01 }`), check: func(c *Config) string {
			if rl := c.Listeners[0].Routes[0].RateLimit; rl.Burst != 1 {
				return fmt.Sprintf("Burst = %d, want 1", rl.Burst)
			}
			return ""
		}},
		{desc: "integer rate", in: inRoute(`rate_limit = { rate = 100, burst = 200, key = "route" }`), check: func(c *Config) string {
			want := &RateLimit{Rate: 100, Burst: 200, Key: "route"}
			if got := c.Listeners[0].Routes[0].RateLimit; !reflect.DeepEqual(got, want) {
				return fmt.Sprintf("RateLimit = %+v, want %+v", got, want)
			}
			return ""
		}},
		{desc: "header key", in: inRoute(`rate_limit = { rate = 1.0, key = "header:X-Api-Key" }`)},
		{desc: "claim key with auth", in: inRoute(`auth = "a"`, `rate_limit = { rate = 1.0, key = "claim:sub" }`)},
		{desc: "empty auth means none", in: inRoute(`auth = ""`)},
		{desc: "empty headers table", in: inRoute(`headers = {}`), check: func(c *Config) string {
			if h := c.Listeners[0].Routes[0].Headers; h == nil || len(h) != 0 {
				return fmt.Sprintf("Headers = %#v, want an empty map", h)
			}
			return ""
		}},
		{desc: "wildcard and IPv6 hosts", in: doc(httpListenerLines, httpRouteLines, []string{`host = "*.example.com"`, `[[listener.route]]`, `host = "[::1]"`, `pool = "p"`}, poolLines)},
		{desc: "unused auth block", in: inRoute()},
		{desc: "hmac auth", in: inAuth(`algorithms = ["HS256", "HS512"]`, `hmac_secret_file = "`+testSecret+`"`, `leeway = "0s"`), check: func(c *Config) string {
			a := c.Auth("a")
			if a == nil || a.HMACSecretFile != testSecret || a.JWKSFile != "" || a.Leeway != 0 || !reflect.DeepEqual(a.Algorithms, []string{"HS256", "HS512"}) {
				return fmt.Sprintf("Auth = %+v", a)
			}
			return ""
		}},
		{desc: "auth defaults", in: inAuth(jwtKeyLines...), check: func(c *Config) string {
			want := Auth{Name: "a", Type: "jwt", Algorithms: []string{"RS256"}, JWKSFile: testJWKS, Leeway: 30 * time.Second, Line: 11}
			if a := c.Auth("a"); a == nil || !reflect.DeepEqual(*a, want) {
				return fmt.Sprintf("Auth = %+v\nwant   %+v", a, want)
			}
			return ""
		}},
		{desc: "forward_claims canonical", in: inAuth(append(jwtKeyLines, `forward_claims = { sub = "x-user-id", "https://example.com/tenant" = "X-Tenant" }`)...), check: func(c *Config) string {
			want := map[string]string{"sub": "X-User-Id", "https://example.com/tenant": "X-Tenant"}
			if got := c.Auth("a").ForwardClaims; !reflect.DeepEqual(got, want) {
				return fmt.Sprintf("ForwardClaims = %v, want %v", got, want)
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			cfg, err := Parse("t.toml", []byte(tt.in))
			if err != nil {
				t.Fatalf("Parse: %v\ninput:\n%s", err, numbered(tt.in))
			}
			if tt.check != nil {
				if msg := tt.check(cfg); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}

// TestHTTPGolden pins the parsed form of testdata/http.toml, the complete
// http example.
func TestHTTPGolden(t *testing.T) {
	const input, golden = "testdata/http.toml", "testdata/http.golden"
	cfg, err := Load(input)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	got := dump(cfg)
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("Load(%s) differs from %s (run go test -update to accept):\n%s", input, golden, lineDiff(string(want), got))
	}
	checkInvariants(t, cfg)
}

func TestConfigAuth(t *testing.T) {
	cfg, err := Load("testdata/http.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range cfg.Auths {
		if got := cfg.Auth(a.Name); got == nil || got.Name != a.Name {
			t.Errorf("Auth(%q) = %v", a.Name, got)
		}
	}
	if a := cfg.Auth("nope"); a != nil {
		t.Errorf("Auth(nope) = %v, want nil", a)
	}
	cfg.Auth(cfg.Auths[0].Name).Issuer = "changed"
	if cfg.Auths[0].Issuer != "changed" {
		t.Error("Auth returned a copy")
	}
}

// TestHTTPFuzzSeeds runs the FuzzParse checks on the http seeds, so that
// the invariants of accepted http configs are checked too.
func TestHTTPFuzzSeeds(t *testing.T) {
	for _, in := range []string{inRoute(`rate_limit = { rate = 1e9 }`), inAuth(jwtKeyLines...)} {
		cfg, err := Parse("t.toml", []byte(in))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		checkInvariants(t, cfg)
	}
}
