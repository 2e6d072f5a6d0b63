package config

import (
	"fmt"
	"math"
	"net/textproto"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lbd-lb/lbd/internal/ascii"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/route"
)

// ProtocolHTTP is the protocol of a layer-7 listener (configs/lbd.example.toml, "HTTP
// listeners").
const ProtocolHTTP = "http"

// Auth types.
const (
	AuthJWT = "jwt"
)

// Defaults of the http keys.
const (
	defaultLeeway         = "30s"
	defaultRateLimitKey   = "client_ip"
	defaultHeaderTimeout  = "10s"
	defaultReadTimeout    = "30s"
	defaultWriteTimeout   = "30s"
	defaultTunnelTimeout  = "1h"
	defaultMaxHeaderBytes = 8192
	defaultMaxBodyBytes   = 4 << 20
	// Bodies are streamed, but a larger limit is a mistake more likely
	// than a need.
	maxMaxBodyBytes = 256 << 20
	// DefaultHTTPMaxConnections is the max_connections of an http listener
	// that sets none: each connection holds read and write buffers
	// (max_header_bytes and 4 KiB), so the cap bounds their memory, at
	// about 120 MiB with the default header limit.
	DefaultHTTPMaxConnections = 10000
	// One /64 is one rate-limit bucket by default. A /64 is the smallest
	// network an ISP hands out (RFC 6177 advises more), and SLAAC and
	// privacy addresses give one host any number of addresses in it, so a
	// longer prefix would let one client mint a fresh bucket per request.
	defaultSourcePrefixV6 = 64
)

// The values of path_normalization.
const (
	PathStrict       = "strict"
	PathMergeSlashes = "merge_slashes"
	PathOff          = "off"
)

// maxRouteHeaderNames bounds the distinct header names the routes of one
// http listener match on (pkg/l7 refuses more).
const maxRouteHeaderNames = 64

// Route is one [[listener.route]] of an http listener. Routes are tried in
// file order and the first that matches wins.
type Route struct {
	// Host is an exact host name, a wildcard ("*.example.com") or "" for
	// any host. It compiles with route.Compile.
	Host string
	// PathPrefix is a path prefix starting with "/", or "" for any path.
	PathPrefix string
	// Headers must all be present with exactly these values. Nil when the
	// route has no headers key.
	Headers map[string]string
	// Pool is the name of the pool the route feeds; it exists.
	Pool string
	// Auth is the name of an [[auth]] block that requests must pass, or ""
	// for none.
	Auth string
	// RateLimit is the route's rate limit, or nil for none.
	RateLimit *RateLimit
	// Line is where the route's table starts in the file.
	Line int
}

// Spec returns the part of r that route.Compile matches on; name identifies
// the route in errors.
func (r *Route) Spec(name string) route.Spec {
	return route.Spec{Name: name, Host: r.Host, PathPrefix: r.PathPrefix, Headers: r.Headers}
}

// RateLimit is a route's rate_limit: a token bucket per key.
type RateLimit struct {
	// Rate is the average number of requests per second per key; positive
	// and finite. The file may give it as a float or an integer.
	Rate float64
	// Burst is the bucket size, at least 1. Default: Rate rounded up.
	Burst int
	// Key names the bucket of a request: "client_ip" (the default),
	// "route", "header:NAME" or "claim:NAME", in the form
	// ratelimit.ParseKey reads. A claim key needs the route to have Auth.
	Key string
}

// Auth is one [[auth]] block.
//
// Validation checks that the key file exists and can be opened, so that
// `lbd check` catches a wrong path; it does not read or parse the file.
// Malformed keys, and an HMAC secret too short for its algorithms, are
// reported when the server loads the block (auth.New), at start and on
// reload.
type Auth struct {
	// Name is unique among auth blocks: letters, digits, '-' and '_'.
	Name string
	// Type is AuthJWT, the only type.
	Type string
	// Algorithms is the non-empty allow-list of JWS algorithms, without
	// duplicates; "none" is never allowed. HS256, HS384 and HS512 need
	// HMACSecretFile; the others need JWKSFile.
	Algorithms []string
	// JWKSFile and HMACSecretFile: exactly one is set, and names a file
	// that exists. Relative paths are relative to lbd's working directory.
	JWKSFile, HMACSecretFile string
	// Issuer and Audience are checked when set.
	Issuer, Audience string
	// Leeway is the clock skew allowed on exp and nbf. Default 30s.
	Leeway time.Duration
	// ForwardClaims maps a claim name to the header that carries it to the
	// backend; header names are in canonical form ("X-User-Id") and
	// distinct. Nil when the block has no forward_claims key.
	ForwardClaims map[string]string
	// Line is where the block's table starts in the file.
	Line int
}

// Auth returns the auth block with the given name, or nil.
func (c *Config) Auth(name string) *Auth {
	for i := range c.Auths {
		if c.Auths[i].Name == name {
			return &c.Auths[i]
		}
	}
	return nil
}

// jwtAlgorithms are the JWS algorithms an [[auth]] block may allow, and
// whether each is an HMAC one (pkg/l7/auth supports exactly these).
var jwtAlgorithms = map[string]bool{
	"RS256": false, "RS384": false, "RS512": false,
	"PS256": false, "PS384": false, "PS512": false,
	"ES256": false, "ES384": false, "ES512": false,
	"EdDSA": false,
	"HS256": true, "HS384": true, "HS512": true,
}

const jwtAlgorithmList = "RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384 or HS512"

// headersNeverForwarded may not be set from a claim; pkg/l7/auth refuses
// the same list.
var headersNeverForwarded = []string{
	"Authorization", "Connection", "Content-Length", "Content-Type",
	"Cookie", "Host", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Proxy-Connection", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade",
}

// auth checks one [[auth]] block.
func (v *validator) auth(i int, r *rawAuth) Auth {
	s := scope{v: v, path: fmt.Sprintf("auth[%d]", i), what: fmt.Sprintf("auth #%d", i+1)}
	a := Auth{Line: v.pos.line(s.path)}

	if name, ok := s.given("name", r.Name); ok {
		if err := checkName(name); err != nil {
			s.errorf("name", "name %q %s", name, err)
		} else {
			a.Name = name
			s.what = fmt.Sprintf("auth %q", name)
		}
	} else if !r.Name.Set {
		s.errorf("", "name is missing")
	}

	if r.Type.Set {
		a.Type = s.oneOf("type", r.Type, "", AuthJWT)
	} else {
		s.errorf("", `type is missing: the only type is "jwt"`)
	}

	hmac, asym := "", ""
	if r.Algorithms.Set && s.typeOK("algorithms", "an array of strings", r.Algorithms.Bad) {
		for _, alg := range r.Algorithms.Val {
			isHMAC, known := jwtAlgorithms[alg]
			switch {
			case strings.EqualFold(alg, "none"):
				s.errorf("algorithms", `algorithms: %q is never accepted: tokens must be signed`, alg)
			case !known:
				s.errorf("algorithms", "algorithms: %q is not one of %s (names are case-sensitive)", alg, jwtAlgorithmList)
			case slices.Contains(a.Algorithms, alg):
				s.errorf("algorithms", "algorithms: %q is listed twice", alg)
			default:
				a.Algorithms = append(a.Algorithms, alg)
				if isHMAC && hmac == "" {
					hmac = alg
				} else if !isHMAC && asym == "" {
					asym = alg
				}
			}
		}
		if len(r.Algorithms.Val) == 0 {
			s.errorf("algorithms", "algorithms must not be empty: list the JWS algorithms to accept, such as [\"RS256\"]")
		}
	} else if !r.Algorithms.Set {
		s.errorf("", `algorithms is missing: list the JWS algorithms to accept, such as ["RS256"]`)
	}

	jwks, jwksOK := s.given("jwks_file", r.JWKSFile)
	secret, secretOK := s.given("hmac_secret_file", r.HMACSecretFile)
	switch {
	case jwksOK && jwks != "" && secretOK && secret != "":
		s.errorf("hmac_secret_file", "set only one of jwks_file and hmac_secret_file")
	case jwksOK && jwks != "":
		if s.fileExists("jwks_file", jwks) {
			a.JWKSFile = jwks
		}
		if hmac != "" {
			s.errorf("algorithms", "algorithm %s needs hmac_secret_file: a jwks_file serves the asymmetric algorithms only", hmac)
		}
	case secretOK && secret != "":
		if s.fileExists("hmac_secret_file", secret) {
			a.HMACSecretFile = secret
		}
		if asym != "" {
			s.errorf("algorithms", "algorithm %s needs a jwks_file: hmac_secret_file only serves HS256, HS384 and HS512", asym)
		}
	case r.JWKSFile.Bad == "" && r.HMACSecretFile.Bad == "": // a mistyped one is reported already
		s.errorf("", "one of jwks_file and hmac_secret_file is required")
	}

	a.Issuer = s.str("issuer", r.Issuer, "")
	a.Audience = s.str("audience", r.Audience, "")
	a.Leeway = s.duration("leeway", r.Leeway, defaultLeeway, true)

	if r.ForwardClaims.Set {
		a.ForwardClaims = map[string]string{}
		byHeader := map[string]string{}
		for _, claim := range s.stringTable("forward_claims", r.ForwardClaims.Val, `{ sub = "X-User-Id" }`) {
			header := claim.val
			canon := textproto.CanonicalMIMEHeaderKey(header)
			switch {
			case claim.key == "":
				s.errorf(claim.at, "forward_claims: empty claim name for header %q", header)
			case !ascii.IsToken(header):
				s.errorf(claim.at, "forward_claims: %q is not a valid header name (claim %q)", header, claim.key)
			case slices.Contains(headersNeverForwarded, canon):
				s.errorf(claim.at, "forward_claims: header %s may not be set from a claim (claim %q)", canon, claim.key)
			case byHeader[canon] != "":
				s.errorf(claim.at, "forward_claims: claims %q and %q both set header %s", byHeader[canon], claim.key, canon)
			default:
				byHeader[canon] = claim.key
				a.ForwardClaims[claim.key] = canon
			}
		}
	}
	return a
}

// fileExists reports whether the file at key can be opened, and reports
// the problem when it cannot. The file is not read.
func (s scope) fileExists(key, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		msg := err.Error()
		if pe, ok := err.(*os.PathError); ok {
			msg = pe.Err.Error()
		}
		s.errorf(key, "%s %q: %s", key, path, msg)
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		s.errorf(key, "%s %q is a directory", key, path)
		return false
	}
	return true
}

// tableEntry is one key of an inline table whose values are strings.
type tableEntry struct {
	key, val string
	at       string // key, relative to the scope, for errors
}

// stringTable checks that val is a table of strings and returns its entries
// sorted by key. example shows the expected form in messages.
func (s scope) stringTable(key string, val any, example string) []tableEntry {
	m, ok := val.(map[string]any)
	if !ok {
		s.errorf(key, "%s must be a table of strings, such as %s, not %s", key, example, article(tomlType(val)))
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var out []tableEntry
	for _, k := range keys {
		at := joinPath(key, k)
		str, ok := m[k].(string)
		if !ok {
			s.errorf(at, "%s.%s must be a string, not %s", key, joinPath("", k), article(tomlType(m[k])))
			continue
		}
		out = append(out, tableEntry{key: k, val: str, at: at})
	}
	return out
}

// httpListener checks the http keys of listener l, and that only http
// listeners use them. auths maps auth block names to lines.
func (v *validator) httpListener(s scope, r *rawListener, l *Listener, pools, auths map[string]int) {
	isHTTP := l.Protocol == ProtocolHTTP
	onlyHTTP := func(key string, set bool) {
		if set && !isHTTP {
			s.errorf(key, "%s applies to http listeners only", key)
		}
	}
	onlyHTTP("tls_cert_file", r.TLSCertFile.Set)
	onlyHTTP("tls_key_file", r.TLSKeyFile.Set)
	onlyHTTP("access_log", r.AccessLog.Set)
	onlyHTTP("header_timeout", r.HeaderTimeout.Set)
	onlyHTTP("read_timeout", r.ReadTimeout.Set)
	onlyHTTP("write_timeout", r.WriteTimeout.Set)
	onlyHTTP("tunnel_timeout", r.TunnelTimeout.Set)
	onlyHTTP("max_header_bytes", r.MaxHeaderBytes.Set)
	onlyHTTP("max_body_bytes", r.MaxBodyBytes.Set)
	onlyHTTP("path_normalization", r.PathNormalization.Set)
	onlyHTTP("strip_headers", r.StripHeaders.Set)
	onlyHTTP("source_prefix_v6", r.SourcePrefixV6.Set)
	for j := range r.Route {
		if !isHTTP {
			v.errorf(fmt.Sprintf("%s.route[%d]", s.path, j), "%s: [[listener.route]] applies to http listeners only", s.what)
		}
	}
	if !isHTTP {
		return
	}

	cert, certOK := s.given("tls_cert_file", r.TLSCertFile)
	key, keyOK := s.given("tls_key_file", r.TLSKeyFile)
	certOK, keyOK = certOK && cert != "", keyOK && key != "" // "" means none
	switch {
	case certOK != keyOK && r.TLSCertFile.Bad == "" && r.TLSKeyFile.Bad == "":
		missing, given := "tls_key_file", "tls_cert_file"
		if !certOK {
			missing, given = given, missing
		}
		s.errorf(given, "%s needs %s: set both to terminate TLS, or neither", given, missing)
	case certOK && keyOK:
		okCert := s.fileExists("tls_cert_file", cert)
		okKey := s.fileExists("tls_key_file", key)
		if okCert && okKey {
			l.TLSCertFile, l.TLSKeyFile = cert, key
		}
	}
	l.AccessLog = s.boolean("access_log", r.AccessLog)
	l.HeaderTimeout = s.duration("header_timeout", r.HeaderTimeout, defaultHeaderTimeout, false)
	l.ReadTimeout = s.duration("read_timeout", r.ReadTimeout, defaultReadTimeout, false)
	l.WriteTimeout = s.duration("write_timeout", r.WriteTimeout, defaultWriteTimeout, false)
	l.TunnelTimeout = s.duration("tunnel_timeout", r.TunnelTimeout, defaultTunnelTimeout, false)
	l.MaxHeaderBytes = s.integer("max_header_bytes", r.MaxHeaderBytes, defaultMaxHeaderBytes, 1024, 1<<20)
	l.MaxBodyBytes = s.integer("max_body_bytes", r.MaxBodyBytes, defaultMaxBodyBytes, 1, maxMaxBodyBytes)
	l.PathNormalization = s.oneOf("path_normalization", r.PathNormalization, PathStrict, PathStrict, PathMergeSlashes, PathOff)
	l.SourcePrefixV6 = s.integer("source_prefix_v6", r.SourcePrefixV6, defaultSourcePrefixV6, 1, 128)
	if r.StripHeaders.Set && s.typeOK("strip_headers", "an array of strings", r.StripHeaders.Bad) {
		for _, name := range r.StripHeaders.Val {
			canon := textproto.CanonicalMIMEHeaderKey(name)
			switch {
			case !ascii.IsToken(name):
				s.errorf("strip_headers", "strip_headers: %q is not a valid header name", name)
			case slices.Contains(headersNeverForwarded, canon) || strings.HasPrefix(canon, "X-Forwarded-"):
				s.errorf("strip_headers", "strip_headers: %s cannot be listed: lbd handles it itself", canon)
			case slices.Contains(l.StripHeaders, canon):
				s.errorf("strip_headers", "strip_headers: %s is listed twice", canon)
			default:
				l.StripHeaders = append(l.StripHeaders, canon)
			}
		}
	}

	if r.Pool.Set {
		s.errorf("pool", "pool does not apply to http listeners: each [[listener.route]] names its pool")
	}
	if l.ProxyProtocol != ProxyProtocolOff {
		s.errorf("proxy_protocol", "proxy_protocol is not supported on http listeners: backends get the client address in X-Forwarded-For")
	}
	if len(r.Route) == 0 {
		s.errorf("", "no routes: an http listener needs at least one [[listener.route]]")
	}
	names := map[string]bool{}
	for j := range r.Route {
		rt := v.route(s, j, &r.Route[j], pools, auths)
		for h := range rt.Headers {
			names[textproto.CanonicalMIMEHeaderKey(h)] = true
		}
		l.Routes = append(l.Routes, rt)
	}
	if len(names) > maxRouteHeaderNames {
		s.errorf("", "the routes match on %d header names, more than %d", len(names), maxRouteHeaderNames)
	}
}

// route checks one [[listener.route]] of the http listener in ls.
func (v *validator) route(ls scope, j int, r *rawRoute, pools, auths map[string]int) Route {
	s := scope{v: v, path: fmt.Sprintf("%s.route[%d]", ls.path, j), what: fmt.Sprintf("%s: route #%d", ls.what, j+1)}
	rt := Route{Line: v.pos.line(s.path)}

	rt.Host = s.str("host", r.Host, "")
	rt.PathPrefix = s.str("path_prefix", r.PathPrefix, "")
	if r.Headers.Set {
		rt.Headers = map[string]string{}
		for _, h := range s.stringTable("headers", r.Headers.Val, `{ "X-Tenant" = "acme" }`) {
			rt.Headers[h.key] = h.val
		}
	}
	// route.Compile is the matcher's own check; it stops at the first
	// problem of a route, so each of host, path_prefix and headers is
	// compiled alone to report them all, each at its own line.
	for _, c := range []struct {
		key  string
		spec route.Spec
	}{
		{"host", route.Spec{Host: rt.Host}},
		{"path_prefix", route.Spec{PathPrefix: rt.PathPrefix}},
		{"headers", route.Spec{Headers: rt.Headers}},
	} {
		if _, err := route.Compile([]route.Spec{c.spec}); err != nil {
			msg := err.Error()
			if _, after, ok := strings.Cut(msg, "route: "); ok {
				msg = after // drop the position and name Compile adds
			}
			s.errorf(c.key, "%s", msg)
		}
	}

	if pool, ok := s.given("pool", r.Pool); ok {
		rt.Pool = pool
		if _, ok := pools[pool]; !ok {
			s.errorf("pool", "pool %q is not defined", pool)
		}
	} else if !r.Pool.Set {
		s.errorf("", "pool is missing: a route needs the pool it feeds")
	}

	if name, ok := s.given("auth", r.Auth); ok && name != "" {
		rt.Auth = name
		if _, ok := auths[name]; !ok {
			s.errorf("auth", "auth %q is not defined: it must name an [[auth]] block", name)
		}
	}

	if r.RateLimit.Set {
		rt.RateLimit = s.rateLimit(r.RateLimit.Val, rt.Auth != "")
	}
	return rt
}

// rateLimit checks a route's rate_limit inline table. It returns nil when
// the table is unusable.
func (s scope) rateLimit(val any, hasAuth bool) *RateLimit {
	const key = "rate_limit"
	m, ok := val.(map[string]any)
	if !ok {
		s.errorf(key, `rate_limit must be a table, such as { rate = 100.0, burst = 200, key = "client_ip" }, not %s`, article(tomlType(val)))
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k != "rate" && k != "burst" && k != "key" {
			s.errorf(joinPath(key, k), "unknown key %q in rate_limit: it takes rate, burst and key", k)
		}
	}

	rl := &RateLimit{Key: defaultRateLimitKey}
	good := true
	switch rate := m["rate"].(type) {
	case nil:
		s.errorf(key, "rate_limit: rate is missing: the requests per second allowed per key")
		good = false
	case float64:
		rl.Rate = rate
	case int64:
		rl.Rate = float64(rate)
	default:
		s.errorf(key+".rate", "rate_limit: rate must be a number, not %s", article(tomlType(rate)))
		good = false
	}
	if good && (!(rl.Rate > 0) || math.IsInf(rl.Rate, 0)) {
		s.errorf(key+".rate", "rate_limit: rate %v must be a finite number greater than 0", rl.Rate)
		good = false
	}

	switch burst := m["burst"].(type) {
	case nil:
		if good {
			rl.Burst = int(min(math.Ceil(rl.Rate), maxInt))
		}
	case int64:
		if burst < 1 || burst > maxInt {
			s.errorf(key+".burst", "rate_limit: burst %d is out of range 1..%d", burst, maxInt)
			good = false
		}
		rl.Burst = int(burst)
	default:
		s.errorf(key+".burst", "rate_limit: burst must be an integer, not %s", article(tomlType(burst)))
		good = false
	}

	switch k := m["key"].(type) {
	case nil:
	case string:
		src, err := ratelimit.ParseKey(k)
		switch {
		case err != nil:
			msg := err.Error()
			if _, after, ok := strings.Cut(msg, "bad key: "); ok {
				msg = after
			}
			s.errorf(key+".key", "rate_limit: bad key %s", msg)
			good = false
		case src.Kind == ratelimit.KeyClaim && !hasAuth:
			s.errorf(key+".key", "rate_limit: key %q needs the route to have auth: claims come from a verified token", k)
			good = false
		}
		rl.Key = k
	default:
		s.errorf(key+".key", "rate_limit: key must be a string, not %s", article(tomlType(k)))
		good = false
	}
	if !good {
		return nil
	}
	return rl
}
