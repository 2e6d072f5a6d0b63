// Package route matches an HTTP request's host, path and headers against the
// [[listener.route]] blocks of an http listener.
//
// The package knows nothing of any HTTP stack: a caller hands it the Host
// header, the path and a header lookup function, and gets back the index of
// the first route that matches, in file order. Whatever the route leads to
// (a pool, an auth block, a rate limiter) is kept by the caller in a slice
// with the same order, so this package stays one concept: matching.
//
// Routes are compiled once per config. Matching uses no regular expressions
// and allocates nothing, because it runs on every request.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/lbd-lb/lbd/internal/ascii"
)

// Sentinel errors returned, wrapped with the route's position and name, by
// Compile.
var (
	ErrHost       = errors.New("route: bad host")
	ErrPathPrefix = errors.New("route: bad path_prefix")
	ErrHeader     = errors.New("route: bad header")
)

// Spec is one route as written in the config. Only the fields that decide
// whether a request matches live here; the pool, auth and rate limit of a
// route stay with the caller, indexed like the specs passed to Compile.
type Spec struct {
	// Name identifies the route in errors; it plays no part in matching.
	Name string

	// Host is an exact host name ("api.example.com"), a wildcard
	// ("*.example.com") or "" for any host, including a missing one.
	//
	// Matching is ASCII case-insensitive, ignores the request's port and
	// tolerates one trailing dot on either side, so "API.example.com.:8443"
	// matches "api.example.com". A wildcard needs at least one label in
	// place of the star: "*.example.com" matches "a.example.com" and
	// "a.b.example.com" but not "example.com"; list that name in a route of
	// its own. An IPv6 literal is written in brackets ("[::1]") and compared
	// as text, so write it the way clients send it. Non-ASCII names must be
	// given in their punycode form, as clients send them.
	Host string

	// PathPrefix is a byte prefix of the request path, or "" for any path.
	// It must start with "/" and is case-sensitive. It is compared with the
	// path exactly as the HTTP layer passes it to Match (see there), so it
	// is written in that form.
	//
	// The match is a plain prefix, as with nginx prefix locations and Envoy
	// prefix routes: "/v1" matches "/v1", "/v1/users" and also "/v10". A
	// prefix that ends in "/" ("/v1/") only matches whole segments below it,
	// and is the form to use when the difference matters.
	PathPrefix string

	// Headers must all be present with exactly these values (byte for byte,
	// case-sensitive). Names are case-insensitive. Empty values are refused
	// by Compile, because a lookup function cannot reliably tell an empty
	// header from a missing one.
	Headers map[string]string
}

// Table is a compiled, immutable list of routes. It is safe for concurrent
// use.
type Table struct {
	routes []route
}

// route is the compiled form of a Spec. Host and prefix are stored as
// strings because comparing string(b) == s does not allocate.
type route struct {
	anyHost  bool
	wildcard bool   // host holds the suffix to match, with its leading dot
	host     string // lower case, no trailing dot, no brackets
	prefix   string
	headers  []header
}

// header is one required header. The name is kept in both forms so that
// neither Match nor MatchString converts on the hot path.
type header struct {
	name      string // canonical MIME form, e.g. "X-Tenant"
	nameBytes []byte
	value     string
}

// Compile validates specs and builds a Table. The order of specs is the
// order of matching: the first route that matches wins. Any invalid spec
// fails the whole table, because a config with a route silently dropped
// would send traffic somewhere the operator did not ask for.
func Compile(specs []Spec) (*Table, error) {
	t := &Table{routes: make([]route, len(specs))}
	for i, s := range specs {
		r, err := compile(s)
		if err != nil {
			return nil, fmt.Errorf("route[%d] %q: %w", i, s.Name, err)
		}
		t.routes[i] = r
	}
	return t, nil
}

func compile(s Spec) (route, error) {
	var r route
	switch h, err := compileHost(s.Host); {
	case err != nil:
		return r, err
	case h == "":
		r.anyHost = true
	case h[0] == '*':
		r.wildcard = true
		r.host = h[1:] // ".example.com"
	default:
		r.host = h
	}

	if s.PathPrefix != "" {
		if s.PathPrefix[0] != '/' {
			return r, fmt.Errorf("%w: %q does not start with \"/\"", ErrPathPrefix, s.PathPrefix)
		}
		for i := 0; i < len(s.PathPrefix); i++ {
			// No request path, raw or decoded, should carry control bytes
			// (the HTTP layer refuses them), so such a prefix is a mistake.
			// Spaces and UTF-8 are allowed: a decoded path may hold them.
			if c := s.PathPrefix[i]; c < ' ' || c == 0x7f {
				return r, fmt.Errorf("%w: %q has a control byte", ErrPathPrefix, s.PathPrefix)
			}
		}
	}
	r.prefix = s.PathPrefix

	seen := make(map[string]bool, len(s.Headers))
	for name, value := range s.Headers {
		if name == "" {
			return r, fmt.Errorf("%w: empty name", ErrHeader)
		}
		if !ascii.IsToken(name) {
			return r, fmt.Errorf("%w: name %q is not an HTTP token", ErrHeader, name)
		}
		canon := canonicalName(name)
		if seen[canon] {
			// Two keys that differ only in case would make the route depend
			// on map order; refuse rather than guess.
			return r, fmt.Errorf("%w: %q is given twice", ErrHeader, canon)
		}
		seen[canon] = true
		if value == "" {
			return r, fmt.Errorf("%w: %q has an empty value", ErrHeader, canon)
		}
		r.headers = append(r.headers, header{name: canon, nameBytes: []byte(canon), value: value})
	}
	// Map order is random; a fixed order makes lookups, and so the calls to
	// the caller's lookup function, reproducible.
	slices.SortFunc(r.headers, func(a, b header) int { return strings.Compare(a.name, b.name) })
	return r, nil
}

// compileHost returns the host in the form routes store it: lower case,
// without a trailing dot or brackets, "*" kept in front of a wildcard's
// suffix. "" means any host.
func compileHost(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	orig := h
	if h[0] == '[' {
		if h[len(h)-1] != ']' {
			return "", fmt.Errorf("%w: %q: unterminated IPv6 literal", ErrHost, orig)
		}
		lit := h[1 : len(h)-1]
		if a, err := netip.ParseAddr(lit); err != nil || !a.Is6() || a.Zone() != "" {
			return "", fmt.Errorf("%w: %q is not an IPv6 literal", ErrHost, orig)
		}
		return strings.ToLower(lit), nil
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	wild := strings.HasPrefix(h, "*.")
	if wild {
		h = h[2:]
	}
	if h == "" || len(h) > 253 {
		return "", fmt.Errorf("%w: %q", ErrHost, orig)
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%w: %q has an empty or over-long label", ErrHost, orig)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c == '*':
				// Only a whole leading label may be a star; "a.*.com",
				// "*" and "*example.com" are all refused here.
				return "", fmt.Errorf("%w: %q: a wildcard must be \"*.\" followed by a name", ErrHost, orig)
			case c == ':':
				return "", fmt.Errorf("%w: %q: the port is not part of a route's host (write IPv6 literals in brackets)", ErrHost, orig)
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			default:
				return "", fmt.Errorf("%w: %q has byte %q", ErrHost, orig, c)
			}
		}
	}
	if wild {
		return "*." + h, nil
	}
	return h, nil
}

// Len returns the number of routes in t.
func (t *Table) Len() int { return len(t.routes) }

// Match returns the index of the first route that accepts the request, or -1
// if none does.
//
// host is the Host header (or the authority of an absolute-form target) as
// received, port included. path is the path without the query string, in the
// form the backend will act on: if the HTTP layer normalises paths (removes
// dot segments, decodes), it must match on the normalised path and forward
// the same one, or a request could be routed by one path and served by
// another. header looks up a request header by name, case-insensitively,
// and returns nil if it is absent; names are passed in canonical MIME form
// ("X-Tenant") and must be neither modified nor retained. If a header
// occurs more than once, the lookup decides which value counts (fasthttp's
// Peek and net/http's Get take the first; pinned in package l7 by
// TestFasthttpDuplicateHeaders), and the HTTP layer should make
// sure the backend does not read another one. A nil header function means
// no headers are present.
//
// Match does not allocate, and it calls header only for routes whose host
// and path already match.
func (t *Table) Match(host, path []byte, header func(name []byte) []byte) int {
	host = hostOnly(host)
	for i := range t.routes {
		r := &t.routes[i]
		if !matchHost(r, host) || !hasPrefix(path, r.prefix) {
			continue
		}
		ok := true
		for j := range r.headers {
			h := &r.headers[j]
			if header == nil || string(header(h.nameBytes)) != h.value {
				ok = false
				break
			}
		}
		if ok {
			return i
		}
	}
	return -1
}

// MatchString is Match for callers that hold strings, such as net/http. It
// does not allocate either.
func (t *Table) MatchString(host, path string, header func(name string) string) int {
	host = hostOnly(host)
	for i := range t.routes {
		r := &t.routes[i]
		if !matchHost(r, host) || !hasPrefix(path, r.prefix) {
			continue
		}
		ok := true
		for j := range r.headers {
			h := &r.headers[j]
			if header == nil || header(h.name) != h.value {
				ok = false
				break
			}
		}
		if ok {
			return i
		}
	}
	return -1
}

// text lets the host and path helpers serve Match and MatchString alike
// without converting, which would allocate.
type text interface{ ~string | ~[]byte }

// hostOnly strips the port and one trailing dot from a Host header value,
// and the brackets from an IPv6 literal. It does not validate the rest: a
// malformed host simply matches no route but the ones with any host.
func hostOnly[T text](h T) T {
	if len(h) > 0 && h[0] == '[' {
		for i := 1; i < len(h); i++ {
			if h[i] == ']' {
				return h[1:i]
			}
		}
		return h // unterminated: leave as is, it matches no literal
	}
	// A name or IPv4 address has at most one colon, before the port. More
	// colons mean an unbracketed IPv6 address, which HTTP does not allow;
	// leave it whole rather than cut it at a guess.
	colon := -1
	for i := 0; i < len(h); i++ {
		if h[i] == ':' {
			if colon >= 0 {
				return h
			}
			colon = i
		}
	}
	if colon >= 0 {
		h = h[:colon]
	}
	if n := len(h); n > 0 && h[n-1] == '.' {
		h = h[:n-1]
	}
	return h
}

// matchHost reports whether host, already passed through hostOnly, matches
// r's host.
func matchHost[T text](r *route, host T) bool {
	switch {
	case r.anyHost:
		return true
	case r.wildcard:
		// len(host) > len(suffix) keeps the bare domain out: "*.example.com"
		// needs at least one byte before ".example.com".
		n := len(host) - len(r.host)
		return n > 0 && equalFold(host[n:], r.host)
	default:
		return len(host) == len(r.host) && equalFold(host, r.host)
	}
}

// equalFold reports whether a equals lower, which is already lower case,
// ignoring ASCII case in a. len(a) must equal len(lower).
func equalFold[T text](a T, lower string) bool {
	for i := 0; i < len(lower); i++ {
		if ascii.Lower(a[i]) != lower[i] {
			return false
		}
	}
	return true
}

// hasPrefix is strings.HasPrefix for either form of path.
func hasPrefix[T text](path T, prefix string) bool {
	return len(path) >= len(prefix) && string(path[:len(prefix)]) == prefix
}

// canonicalName returns the canonical MIME form of a header name token:
// upper case after the start and after each '-', lower case elsewhere. Both
// net/http and fasthttp store names this way, so their lookups need no
// further work (pinned in package l7 by TestFasthttpHeaderNamesNormalized).
func canonicalName(s string) string {
	b := []byte(s)
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - ('a' - 'A')
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	return string(b)
}
