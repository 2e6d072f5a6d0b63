package route

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// headers is a request's header list, looked up the way HTTP stacks do:
// case-insensitively, first occurrence wins.
type headers [][2]string

func (h headers) string(name string) string {
	for _, kv := range h {
		if strings.EqualFold(kv[0], name) {
			return kv[1]
		}
	}
	return ""
}

// byteHeaders is headers for Match, converted once so that lookups do not
// allocate.
type byteHeaders [][2][]byte

func (h headers) toBytes() byteHeaders {
	b := make(byteHeaders, len(h))
	for i, kv := range h {
		b[i] = [2][]byte{[]byte(kv[0]), []byte(kv[1])}
	}
	return b
}

func (h byteHeaders) lookup(name []byte) []byte {
	for _, kv := range h {
		if bytes.EqualFold(kv[0], name) {
			return kv[1]
		}
	}
	return nil
}

type request struct {
	desc   string
	host   string
	path   string
	header headers
	want   int
}

// check runs every request through Match and MatchString, which must agree.
func check(t *testing.T, specs []Spec, reqs []request) {
	t.Helper()
	tab, err := Compile(specs)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	for _, r := range reqs {
		got := tab.Match([]byte(r.host), []byte(r.path), r.header.toBytes().lookup)
		if got != r.want {
			t.Errorf("%s: Match(%q, %q, %q) = %d, want %d", r.desc, r.host, r.path, r.header, got, r.want)
		}
		if got := tab.MatchString(r.host, r.path, r.header.string); got != r.want {
			t.Errorf("%s: MatchString(%q, %q, %q) = %d, want %d", r.desc, r.host, r.path, r.header, got, r.want)
		}
	}
}

// TestMatchHost pins host matching: exact hosts, case-insensitive, port
// ignored.
func TestMatchHost(t *testing.T) {
	specs := []Spec{
		{Name: "api", Host: "api.example.com"},
		{Name: "upper", Host: "WWW.Example.COM."},
		{Name: "v6", Host: "[2001:DB8::1]"},
		{Name: "v4", Host: "192.0.2.7"},
	}
	check(t, specs, []request{
		{desc: "exact", host: "api.example.com", want: 0},
		{desc: "upper-case request", host: "API.EXAMPLE.COM", want: 0},
		{desc: "port ignored", host: "api.example.com:8443", want: 0},
		{desc: "trailing dot", host: "api.example.com.", want: 0},
		{desc: "trailing dot and port", host: "api.example.com.:80", want: 0},
		{desc: "two trailing dots", host: "api.example.com..", want: -1},
		{desc: "spec upper-case and dot", host: "www.example.com", want: 1},
		{desc: "longer", host: "api.example.com.evil", want: -1},
		{desc: "shorter", host: "pi.example.com", want: -1},
		{desc: "sub-domain of exact", host: "a.api.example.com", want: -1},
		{desc: "suffix trick", host: "evilapi.example.com", want: -1},
		{desc: "empty port", host: "api.example.com:", want: 0},
		{desc: "two ports", host: "api.example.com:1:2", want: -1},
		{desc: "ipv6 literal", host: "[2001:db8::1]", want: 2},
		{desc: "ipv6 literal with port", host: "[2001:db8::1]:443", want: 2},
		{desc: "ipv6 unterminated", host: "[2001:db8::1", want: -1},
		{desc: "ipv6 other text form", host: "[2001:db8:0::1]", want: -1},
		{desc: "ipv4", host: "192.0.2.7:80", want: 3},
		{desc: "missing host", host: "", want: -1},
		{desc: "nul byte", host: "api.example.com\x00", want: -1},
	})
}

// TestMatchWildcard pins the wildcard rules in Spec.Host's doc comment.
func TestMatchWildcard(t *testing.T) {
	specs := []Spec{
		{Name: "wild", Host: "*.example.com"},
		{Name: "any"},
	}
	check(t, specs, []request{
		{desc: "one label", host: "a.example.com", want: 0},
		{desc: "two labels", host: "a.b.example.com", want: 0},
		{desc: "case and port", host: "A.Example.COM:80", want: 0},
		{desc: "trailing dot", host: "a.example.com.", want: 0},
		{desc: "bare domain falls through", host: "example.com", want: 1},
		{desc: "empty label", host: ".example.com", want: 1},
		{desc: "no dot before suffix", host: "aexample.com", want: 1},
		{desc: "other domain", host: "a.example.org", want: 1},
		{desc: "suffix as label", host: "example.com.evil.net", want: 1},
		{desc: "empty host", host: "", want: 1},
	})
}

// TestMatchPath pins the plain byte-prefix semantics of PathPrefix.
func TestMatchPath(t *testing.T) {
	specs := []Spec{
		{Name: "v1-seg", PathPrefix: "/v1/"},
		{Name: "v2", PathPrefix: "/v2"},
		{Name: "root", PathPrefix: "/"},
	}
	check(t, specs, []request{
		{desc: "below segment prefix", path: "/v1/users", want: 0},
		{desc: "segment prefix itself", path: "/v1/", want: 0},
		{desc: "segment prefix without slash", path: "/v1", want: 2},
		{desc: "segment prefix is segment-safe", path: "/v10/users", want: 2},
		{desc: "plain prefix", path: "/v2/users", want: 1},
		{desc: "plain prefix exact", path: "/v2", want: 1},
		{desc: "plain prefix is not segment-safe", path: "/v20", want: 1},
		{desc: "case-sensitive", path: "/V1/users", want: 2},
		{desc: "root", path: "/", want: 2},
		{desc: "empty path", path: "", want: -1},
		{desc: "asterisk form", path: "*", want: -1},
	})
}

// TestMatchHeaders pins "all must match exactly" with case-insensitive names.
func TestMatchHeaders(t *testing.T) {
	specs := []Spec{
		{Name: "acme-beta", Headers: map[string]string{"X-Tenant": "acme", "x-CHANNEL": "beta"}},
		{Name: "acme", Headers: map[string]string{"x-tenant": "acme"}},
		{Name: "fallback"},
	}
	check(t, specs, []request{
		{desc: "both", header: headers{{"X-Tenant", "acme"}, {"X-Channel", "beta"}}, want: 0},
		{desc: "both, names in other case", header: headers{{"x-tenant", "acme"}, {"X-CHANNEL", "beta"}}, want: 0},
		{desc: "one of two", header: headers{{"X-Tenant", "acme"}}, want: 1},
		{desc: "value case matters", header: headers{{"X-Tenant", "ACME"}}, want: 2},
		{desc: "value is exact, not prefix", header: headers{{"X-Tenant", "acme2"}}, want: 2},
		{desc: "value with space", header: headers{{"X-Tenant", "acme "}}, want: 2},
		{desc: "first occurrence decides", header: headers{{"X-Tenant", "evil"}, {"X-Tenant", "acme"}}, want: 2},
		{desc: "none", want: 2},
		{desc: "empty value", header: headers{{"X-Tenant", ""}}, want: 2},
	})

	// A nil lookup means the request has no headers.
	tab, err := Compile(specs)
	if err != nil {
		t.Fatal(err)
	}
	if got := tab.Match(nil, nil, nil); got != 2 {
		t.Errorf("Match with nil header func = %d, want 2", got)
	}
	if got := tab.MatchString("", "", nil); got != 2 {
		t.Errorf("MatchString with nil header func = %d, want 2", got)
	}
}

// TestMatchOrder pins "first match in file order wins", even when a later
// route is more specific.
func TestMatchOrder(t *testing.T) {
	specs := []Spec{
		{Name: "api-v1", Host: "api.example.com", PathPrefix: "/v1/"},
		{Name: "wild-admin", Host: "*.example.com", PathPrefix: "/admin"},
		{Name: "api-all", Host: "api.example.com"},
		{Name: "api-admin-unreachable", Host: "api.example.com", PathPrefix: "/admin"},
		{Name: "tenant", Headers: map[string]string{"X-Tenant": "acme"}},
		{Name: "catch-all"},
		{Name: "after-catch-all", Host: "other.example.net"},
	}
	tenant := headers{{"X-Tenant", "acme"}}
	check(t, specs, []request{
		{desc: "first route", host: "api.example.com", path: "/v1/x", want: 0},
		{desc: "wildcard before exact", host: "api.example.com", path: "/admin/x", want: 1},
		{desc: "exact host, other path", host: "api.example.com", path: "/v2", want: 2},
		{desc: "header route", host: "www.example.org", path: "/", header: tenant, want: 4},
		{desc: "host routes win over header route", host: "api.example.com", path: "/", header: tenant, want: 2},
		{desc: "catch-all", host: "other.example.net", path: "/", want: 5},
	})
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		desc string
		spec Spec
		want error
	}{
		{"lone star", Spec{Host: "*"}, ErrHost},
		{"star dot", Spec{Host: "*."}, ErrHost},
		{"inner star", Spec{Host: "a.*.com"}, ErrHost},
		{"double wildcard", Spec{Host: "*.*.com"}, ErrHost},
		{"star glued to name", Spec{Host: "*example.com"}, ErrHost},
		{"trailing star", Spec{Host: "example.*"}, ErrHost},
		{"port", Spec{Host: "example.com:80"}, ErrHost},
		{"empty label", Spec{Host: "a..com"}, ErrHost},
		{"leading dot", Spec{Host: ".example.com"}, ErrHost},
		{"two trailing dots", Spec{Host: "example.com.."}, ErrHost},
		{"space", Spec{Host: "exa mple.com"}, ErrHost},
		{"slash", Spec{Host: "example.com/"}, ErrHost},
		{"non-ASCII", Spec{Host: "bücher.de"}, ErrHost},
		{"long label", Spec{Host: strings.Repeat("a", 64) + ".com"}, ErrHost},
		{"long name", Spec{Host: strings.Repeat("a.", 127) + "aa"}, ErrHost},
		{"bare IPv6", Spec{Host: "::1"}, ErrHost},
		{"bad IPv6", Spec{Host: "[::g]"}, ErrHost},
		{"IPv4 in brackets", Spec{Host: "[192.0.2.1]"}, ErrHost},
		{"IPv6 zone", Spec{Host: "[fe80::1%eth0]"}, ErrHost},
		{"unterminated IPv6", Spec{Host: "[::1"}, ErrHost},
		{"relative path", Spec{PathPrefix: "v1/"}, ErrPathPrefix},
		{"path with NUL", Spec{PathPrefix: "/a\x00"}, ErrPathPrefix},
		{"path with DEL", Spec{PathPrefix: "/a\x7f"}, ErrPathPrefix},
		{"path with control", Spec{PathPrefix: "/a\n"}, ErrPathPrefix},
		{"empty header name", Spec{Headers: map[string]string{"": "x"}}, ErrHeader},
		{"header name with colon", Spec{Headers: map[string]string{"X-A:": "x"}}, ErrHeader},
		{"header name with space", Spec{Headers: map[string]string{"X A": "x"}}, ErrHeader},
		{"header name twice", Spec{Headers: map[string]string{"X-A": "x", "x-a": "y"}}, ErrHeader},
		{"empty header value", Spec{Headers: map[string]string{"X-A": ""}}, ErrHeader},
	} {
		ok := Spec{Name: "ok", Host: "a.example.com"}
		tc.spec.Name = "bad"
		_, err := Compile([]Spec{ok, tc.spec})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Compile(%+v) = %v, want %v", tc.desc, tc.spec, err, tc.want)
			continue
		}
		// The error names the route, so an operator can find it.
		if !strings.Contains(err.Error(), `route[1] "bad"`) {
			t.Errorf("%s: error %q does not name the route", tc.desc, err)
		}
	}
}

func TestCompileAccepts(t *testing.T) {
	for _, s := range []Spec{
		{},
		{Host: "localhost"},
		{Host: "*.com"},
		{Host: "_srv.example.com"},
		{Host: "xn--bcher-kva.de"},
		{Host: "[::1]"},
		{Host: "[::ffff:192.0.2.1]"},
		{Host: strings.Repeat("a", 63) + ".com"},
		{PathPrefix: "/"},
		{PathPrefix: "/a%20b;x=1"},
		{PathPrefix: "/a b/café/"},
		{Headers: map[string]string{"X-Tenant": "acme", "Accept": "text/html, */*"}},
	} {
		if _, err := Compile([]Spec{s}); err != nil {
			t.Errorf("Compile(%+v): %v", s, err)
		}
	}
	tab, err := Compile(nil)
	if err != nil || tab.Len() != 0 || tab.MatchString("a", "/", nil) != -1 {
		t.Errorf("empty table: %v, %v", tab, err)
	}
}

func TestCanonicalName(t *testing.T) {
	for in, want := range map[string]string{
		"x-tenant":    "X-Tenant",
		"X-TENANT":    "X-Tenant",
		"content-md5": "Content-Md5",
		"a--b":        "A--B",
		"x_y":         "X_y",
	} {
		if got := canonicalName(in); got != want {
			t.Errorf("canonicalName(%q) = %q, want %q", in, got, want)
		}
	}
}

// benchTable has n routes. Every route has a host, a path and one header so
// that a request reaching the last route exercises every check on the way.
func benchTable(tb testing.TB, n int) *Table {
	specs := make([]Spec, n)
	for i := range specs {
		specs[i] = Spec{
			Name:       fmt.Sprint("r", i),
			Host:       fmt.Sprintf("svc%d.example.com", i),
			PathPrefix: fmt.Sprintf("/api/v%d/", i),
			Headers:    map[string]string{"X-Tenant": "acme"},
		}
	}
	specs[n-1].Host = "*.example.com"
	tab, err := Compile(specs)
	if err != nil {
		tb.Fatal(err)
	}
	return tab
}

// TestMatchAllocs pins that matching allocates nothing per request.
func TestMatchAllocs(t *testing.T) {
	tab := benchTable(t, 16)
	h := headers{{"Accept", "*/*"}, {"X-Tenant", "acme"}}
	hb := h.toBytes()
	host, path := []byte("Last.Example.COM:443"), []byte("/api/v15/users")
	nowhere := []byte("nowhere")
	hostS, pathS := string(host), string(path)
	if got := tab.Match(host, path, hb.lookup); got != 15 {
		t.Fatalf("Match = %d, want 15", got)
	}
	if n := testing.AllocsPerRun(1000, func() { tab.Match(host, path, hb.lookup) }); n != 0 {
		t.Errorf("Match allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() { tab.MatchString(hostS, pathS, h.string) }); n != 0 {
		t.Errorf("MatchString allocates %v times per call", n)
	}
	if n := testing.AllocsPerRun(1000, func() { tab.Match(nowhere, path, hb.lookup) }); n != 0 {
		t.Errorf("Match of a miss allocates %v times per call", n)
	}
}

func BenchmarkMatch(b *testing.B) {
	h := headers{{"Accept", "*/*"}, {"X-Tenant", "acme"}}.toBytes()
	for _, n := range []int{1, 10, 100} {
		tab := benchTable(b, n)
		last := []byte(fmt.Sprintf("/api/v%d/users", n-1))
		b.Run(fmt.Sprintf("routes=%d/first", n), func(b *testing.B) {
			host, path := []byte("svc0.example.com"), []byte("/api/v0/users")
			if n == 1 {
				host = []byte("x.example.com")
			}
			b.ReportAllocs()
			for b.Loop() {
				if tab.Match(host, path, h.lookup) != 0 {
					b.Fatal("no match")
				}
			}
		})
		b.Run(fmt.Sprintf("routes=%d/last", n), func(b *testing.B) {
			host := []byte("Other.Example.COM:8443")
			b.ReportAllocs()
			for b.Loop() {
				if tab.Match(host, last, h.lookup) != n-1 {
					b.Fatal("no match")
				}
			}
		})
		b.Run(fmt.Sprintf("routes=%d/miss", n), func(b *testing.B) {
			host := []byte("example.org")
			b.ReportAllocs()
			for b.Loop() {
				if tab.Match(host, last, h.lookup) != -1 {
					b.Fatal("match")
				}
			}
		})
	}
}
