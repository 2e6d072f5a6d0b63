package l7

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fasthttp"

	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/route"
	"github.com/lbd-lb/lbd/pkg/l7/target"
)

// recorder is a backend that keeps the exact bytes of every request it
// receives (request line, header, body and trailer section), then answers
// with answer.
type recorder struct {
	addr   netip.AddrPort
	answer string
	mu     sync.Mutex
	got    []string
}

func newRecorder(t testing.TB, answer string) *recorder {
	r := &recorder{answer: answer}
	if r.answer == "" {
		r.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	}
	r.addr = listenRaw(t, func(c rawConn) {
		var raw bytes.Buffer
		br := bufio.NewReader(io.TeeReader(c, &raw))
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return // an incomplete request is not recorded
			}
			// The tee holds what was read, and perhaps some of the next
			// pipelined request: keep exactly this request's bytes.
			n := raw.Len() - br.Buffered()
			r.mu.Lock()
			r.got = append(r.got, string(raw.Bytes()[:n]))
			r.mu.Unlock()
			raw.Next(n)
			io.WriteString(c, r.answer)
		}
	})
	return r
}

// requests returns what the backend received so far.
func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// last is the last request received, or "".
func (r *recorder) last() string {
	g := r.requests()
	if len(g) == 0 {
		return ""
	}
	return g[len(g)-1]
}

// requestLine is the first line of a recorded request.
func requestLine(raw string) string {
	line, _, _ := strings.Cut(raw, "\r\n")
	return line
}

// headerLines are the header lines of a recorded request, in order.
func headerLinesOf(raw string) []string {
	head, _, _ := strings.Cut(raw, "\r\n\r\n")
	lines := strings.Split(head, "\r\n")
	return lines[1:]
}

// headerValues are the values of name (any case) in a recorded request.
func headerValues(raw, name string) []string {
	var out []string
	for _, l := range headerLinesOf(raw) {
		k, v, _ := strings.Cut(l, ":")
		if strings.EqualFold(k, name) {
			out = append(out, strings.TrimSpace(v))
		}
	}
	return out
}

// authRoutes is the layout of the attacks: /admin/ behind JWT auth on one
// backend, everything else without auth on another, and the sign function
// for tokens that pass.
type authRoutes struct {
	admin, public *recorder
	srv           *Server
	addr          string
	token         string
}

func newAuthRoutes(t *testing.T, mode target.Mode, extra ...Route) *authRoutes {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(auth.Config{Name: "a", Algorithms: []string{"HS256"}, HMACSecretFile: file,
		ForwardClaims: map[string]string{"sub": "X-User-Id"}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := &authRoutes{admin: newRecorder(t, ""), public: newRecorder(t, "")}
	a.token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	routes := append(extra,
		Route{Name: "admin", Spec: route.Spec{PathPrefix: "/admin/"}, Pool: testPool(t, "wrr", a.admin.addr), Auth: v},
		Route{Name: "public", Spec: route.Spec{}, Pool: testPool(t, "wrr", a.public.addr)})
	a.srv, a.addr = startServer(t, Config{Now: func() time.Time { return now }, Routes: routes, PathNormalization: mode})
	return a
}

// TestPathRoutedIsPathForwarded: whatever the spelling of the target, the
// backend receives the path that was routed (and authenticated), and
// targets that two parsers could read differently are refused before any
// backend sees them.
func TestPathRoutedIsPathForwarded(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	for _, tc := range []struct {
		desc, target string
		token        bool
		code         int
		backend      string // "admin", "public" or "" for none
		line         string // the request line the backend must get
	}{
		{"encoded slash out of /admin/", "/admin/..%2Fpublic", false, 400, "", ""},
		{"encoded slash, lower case", "/admin/..%2fpublic", false, 400, "", ""},
		{"encoded backslash", "/admin/..%5Cpublic", false, 400, "", ""},
		{"raw backslash", "/public/..\\admin/x", false, 400, "", ""},
		{"encoded dots into /admin/", "/public/%2e%2e/admin/x", false, 401, "", ""},
		{"encoded dots into /admin/ with token", "/public/%2E%2E/admin/x", true, 200, "admin", "GET /admin/x HTTP/1.1"},
		{"dot segments", "/admin/./a/../b?q=%2F..", true, 200, "admin", "GET /admin/b?q=%2F.. HTTP/1.1"},
		{"dots out of /admin/", "/admin/../public", false, 200, "public", "GET /public HTTP/1.1"},
		{"dot params", "/public/..;/admin/x", false, 400, "", ""},
		{"path parameter hides /admin/ (servlet containers)", "/admin;x/secret", false, 400, "", ""},
		{"encoded path parameter", "/%61dmin%3b/secret", false, 400, "", ""},
		{"encoded unreserved", "/%61dmin/x", false, 401, "", ""},
		{"leading double slash", "//admin.internal/x", false, 400, "", ""},
		{"encoded NUL", "/public/a%00b", false, 400, "", ""},
		{"bad escape", "/public/%zz", false, 400, "", ""},
		{"plain", "/public/x?a=1", false, 200, "public", "GET /public/x?a=1 HTTP/1.1"},
		{"other escapes kept as sent", "/public/caf%c3%a9", false, 200, "public", "GET /public/caf%c3%a9 HTTP/1.1"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			na, np := len(a.admin.requests()), len(a.public.requests())
			req := "GET " + tc.target + " HTTP/1.1\r\nHost: api.example\r\n"
			if tc.token {
				req += "Authorization: Bearer " + a.token + "\r\n"
			}
			resp, _, _ := rawExchange(t, a.addr, req+"\r\n")
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			ga, gp := a.admin.requests()[na:], a.public.requests()[np:]
			var got []string
			switch tc.backend {
			case "admin":
				got, ga = ga, nil
			case "public":
				got, gp = gp, nil
			}
			if len(ga)+len(gp) != 0 {
				t.Fatalf("the wrong backend got %q %q", ga, gp)
			}
			if tc.backend == "" {
				return
			}
			if len(got) != 1 || requestLine(got[0]) != tc.line {
				t.Fatalf("backend %s got %q, want request line %q", tc.backend, got, tc.line)
			}
			if h := headerValues(got[0], "Host"); len(h) != 1 || h[0] != "api.example" {
				t.Fatalf("backend got Host %q", h)
			}
		})
	}
}

// TestServeMuxBehindAuth is the bypass as a stock Go backend sees it: its
// /admin/ handler must never run for a request without a token, however
// the client spells the path.
func TestServeMuxBehindAuth(t *testing.T) {
	var mu sync.Mutex
	var adminHits []string
	mux := http.NewServeMux()
	mux.HandleFunc("/admin/", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		adminHits = append(adminHits, r.RequestURI+" auth="+r.Header.Get("Authorization"))
		mu.Unlock()
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {})
	be := newBackend(t, mux.ServeHTTP)
	// Both routes lead to the one ServeMux.
	_, addr := startServer(t, Config{Routes: []Route{
		{Name: "admin", Spec: route.Spec{PathPrefix: "/admin/"}, Pool: testPool(t, "wrr", be.addr), Auth: mustVerifier(t)},
		{Name: "public", Spec: route.Spec{}, Pool: testPool(t, "wrr", be.addr)},
	}})
	for _, p := range []string{"/admin/..%2Fpublic", "/public/%2e%2e/admin/", "/public/..;/admin/", "/public/%2E%2E%2Fadmin/",
		"/x/../admin/", "/%61dmin/", "/admin%2F", "//admin/", "/public/..\\admin/", "/./admin/", "/admin/."} {
		rawExchange(t, addr, "GET "+p+" HTTP/1.1\r\nHost: h\r\n\r\n")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(adminHits) != 0 {
		t.Fatalf("the backend's /admin/ handler ran without a token: %q", adminHits)
	}
}

func mustVerifier(t *testing.T) *auth.Verifier {
	file := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(file, []byte("0123456789abcdef0123456789abcdef"), 0o600)
	v, err := auth.New(auth.Config{Name: "a", Algorithms: []string{"HS256"}, HMACSecretFile: file})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMergeSlashesAndOff pins the other two path_normalization modes.
func TestMergeSlashesAndOff(t *testing.T) {
	m := newAuthRoutes(t, target.MergeSlashes)
	resp, _, _ := rawExchange(t, m.addr, "GET //admin.internal//x/ HTTP/1.1\r\nHost: api.example\r\n\r\n")
	if resp.StatusCode != 200 || requestLine(m.public.last()) != "GET /admin.internal/x/ HTTP/1.1" {
		t.Fatalf("merge_slashes: %d, backend got %q", resp.StatusCode, requestLine(m.public.last()))
	}
	resp, _, _ = rawExchange(t, m.addr, "GET /public//..//admin/x HTTP/1.1\r\nHost: api.example\r\n\r\n")
	if resp.StatusCode != 401 {
		t.Fatalf("merge_slashes: /public//..//admin/x got %d, want 401 (it is /admin/x)", resp.StatusCode)
	}
	o := newAuthRoutes(t, target.Off)
	for _, p := range []string{"/public/./x", "/public/%41", "/admin/../public"} {
		if resp, _, _ := rawExchange(t, o.addr, "GET "+p+" HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 400 {
			t.Errorf("off: %s got %d, want 400", p, resp.StatusCode)
		}
	}
	if resp, _, _ := rawExchange(t, o.addr, "GET /public/caf%C3%A9?x=/../ HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 ||
		requestLine(o.public.last()) != "GET /public/caf%C3%A9?x=/../ HTTP/1.1" {
		t.Errorf("off: %d, backend got %q", resp.StatusCode, requestLine(o.public.last()))
	}
	if n := len(o.admin.requests()); n != 0 {
		t.Errorf("off: admin backend got %d requests", n)
	}
}

// TestHostRoutedIsHostForwarded: the backend gets the Host that was routed,
// and the target in origin-form; an authority that disagrees with Host, or
// userinfo anywhere, is refused, and lbd never makes up an Authorization.
func TestHostRoutedIsHostForwarded(t *testing.T) {
	internal, public := newRecorder(t, ""), newRecorder(t, "")
	_, addr := startServer(t, Config{Routes: []Route{
		{Name: "internal", Spec: route.Spec{Host: "admin.internal"}, Pool: testPool(t, "wrr", internal.addr)},
		{Name: "public", Spec: route.Spec{Host: "public.example"}, Pool: testPool(t, "wrr", public.addr)},
	}})
	for _, tc := range []struct {
		desc, req string
		code      int
		line      string // the request line public gets, "" for nothing
	}{
		{"absolute-form, other authority", "GET http://admin.internal/x HTTP/1.1\r\nHost: public.example\r\n\r\n", 400, ""},
		{"absolute-form, same authority", "GET http://Public.Example/x?y HTTP/1.1\r\nHost: public.example\r\n\r\n", 200, "GET /x?y HTTP/1.1"},
		{"absolute-form, no path", "GET https://public.example HTTP/1.1\r\nHost: public.example\r\n\r\n", 200, "GET / HTTP/1.1"},
		{"absolute-form with userinfo", "GET http://u:p@public.example/x HTTP/1.1\r\nHost: public.example\r\n\r\n", 400, ""},
		{"userinfo in Host", "GET /x HTTP/1.1\r\nHost: u:p@public.example\r\n\r\n", 400, ""},
		{"origin-form //authority", "GET //admin.internal/x HTTP/1.1\r\nHost: public.example\r\n\r\n", 400, ""},
		{"missing Host", "GET /x HTTP/1.1\r\n\r\n", 400, ""},
		{"Host as a list", "GET /x HTTP/1.1\r\nHost: other.example,public.example\r\n\r\n", 400, ""},
		{"Host with empty labels", "GET /x HTTP/1.1\r\nHost: public.example..\r\n\r\n", 400, ""},
		{"Host with one trailing dot", "GET /x HTTP/1.1\r\nHost: public.example.\r\n\r\n", 200, "GET /x HTTP/1.1"},
		{"HTTP/1.0 without Host", "GET /x HTTP/1.0\r\n\r\n", 400, ""},
		{"asterisk with GET", "GET * HTTP/1.1\r\nHost: public.example\r\n\r\n", 400, ""},
		{"asterisk with OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: public.example\r\n\r\n", 200, "OPTIONS * HTTP/1.1"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			ni, np := len(internal.requests()), len(public.requests())
			resp, _, _ := rawExchange(t, addr, tc.req)
			if resp.StatusCode != tc.code {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.code)
			}
			if n := len(internal.requests()) - ni; n != 0 {
				t.Fatalf("admin.internal got %q", internal.requests()[ni:])
			}
			got := public.requests()[np:]
			if tc.line == "" {
				if len(got) != 0 {
					t.Fatalf("public got %q", got)
				}
				return
			}
			if len(got) != 1 || requestLine(got[0]) != tc.line {
				t.Fatalf("public got %q, want request line %q", got, tc.line)
			}
			if h := headerValues(got[0], "Host"); len(h) != 1 || strings.TrimSuffix(h[0], ".") != "public.example" {
				t.Fatalf("public got Host %q", h)
			}
			if h := headerValues(got[0], "Authorization"); len(h) != 0 {
				t.Fatalf("public got Authorization %q", h)
			}
		})
	}
}

// TestOneAuthorization: an auth route takes exactly one Authorization
// header; the one verified is the one forwarded.
func TestOneAuthorization(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	resp, _, c := rawExchange(t, a.addr, "GET /admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "+a.token+"\r\nAuthorization: Bearer forged\r\n\r\n")
	if resp.StatusCode != 400 || !closedAfter(c) {
		t.Fatalf("two Authorization headers: %d", resp.StatusCode)
	}
	resp, _, _ = rawExchange(t, a.addr, "GET /admin/x HTTP/1.1\r\nHost: h\r\nauthorization: Bearer "+a.token+"\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("one Authorization header: %d", resp.StatusCode)
	}
	if h := headerValues(a.admin.last(), "Authorization"); len(h) != 1 || h[0] != "Bearer "+a.token {
		t.Fatalf("backend got Authorization %q", h)
	}
	if n := len(a.admin.requests()); n != 1 {
		t.Fatalf("admin backend got %d requests, want 1", n)
	}
}

// TestTrailersNeverForwarded: fields in a chunked body's trailer section
// reach the backend neither as header nor as trailer fields.
func TestTrailersNeverForwarded(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	req := "POST /admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + a.token + "\r\nTrailer: X-User-Id\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-User-Id: evil\r\nX_User_Id: evil\r\nX-Tenant: globex\r\n\r\n"
	resp, body, _ := rawExchange(t, a.addr, req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d %q", resp.StatusCode, body)
	}
	got := a.admin.last()
	if strings.Contains(got, "evil") || strings.Contains(got, "6.6.6.6") || strings.Contains(got, "globex") {
		t.Fatalf("a trailer field reached the backend:\n%s", got)
	}
	if h := headerValues(got, "X-User-Id"); len(h) != 1 || h[0] != "alice" {
		t.Fatalf("backend got X-User-Id %q", h)
	}
	if !strings.Contains(got, "\r\n\r\n5\r\nhello\r\n0\r\n\r\n") {
		t.Fatalf("backend did not get the body as sent:\n%q", got)
	}
	// A trailer field no sender may put there fails the request.
	n := len(a.admin.requests())
	req = "POST /admin/x HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer " + a.token + "\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"5\r\nhello\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
	resp, _, c := rawExchange(t, a.addr, req)
	if resp.StatusCode != 400 || !closedAfter(c) {
		t.Fatalf("forbidden trailer field: %d", resp.StatusCode)
	}
	for _, r := range a.admin.requests()[n:] {
		if strings.Contains(r, "6.6.6.6") || strings.HasSuffix(r, "0\r\n\r\n") {
			t.Fatalf("the backend got a complete request or the field:\n%q", r)
		}
	}
}

// TestRouteHeaderOnce: a header a route matches on may appear once.
func TestRouteHeaderOnce(t *testing.T) {
	acme, other := newRecorder(t, ""), newRecorder(t, "")
	_, addr := startServer(t, Config{Routes: []Route{
		{Name: "acme", Spec: route.Spec{Headers: map[string]string{"X-Tenant": "acme"}}, Pool: testPool(t, "wrr", acme.addr)},
		{Name: "other", Spec: route.Spec{}, Pool: testPool(t, "wrr", other.addr)},
	}})
	resp, _, c := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: acme\r\nx-tenant: globex\r\n\r\n")
	if resp.StatusCode != 400 || !closedAfter(c) {
		t.Fatalf("repeated X-Tenant: %d", resp.StatusCode)
	}
	if len(acme.requests())+len(other.requests()) != 0 {
		t.Fatalf("a backend got the request")
	}
	resp, _, c = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: acme\r\nX_Tenant: globex\r\n\r\n")
	if resp.StatusCode != 400 || !closedAfter(c) {
		t.Fatalf("X-Tenant and its underscore twin: %d", resp.StatusCode)
	}
	resp, _, _ = rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: acme\r\nX-Other: 1\r\nX-Other: 2\r\nConnection: X-Tenant\r\n\r\n")
	if resp.StatusCode != 200 || len(acme.requests()) != 1 {
		t.Fatalf("one X-Tenant: %d", resp.StatusCode)
	}
	if h := headerValues(acme.last(), "X-Tenant"); len(h) != 1 || h[0] != "acme" {
		t.Fatalf("Connection removed the header the request was routed by: %q", h)
	}
}

// TestSpoofableHeaders: headers through which a client could pose as
// another address or ask for another URL are removed from untrusted peers
// and kept from trusted ones; Connection cannot remove what lbd relies on.
func TestSpoofableHeaders(t *testing.T) {
	rec := newRecorder(t, "")
	spoof := "X-Real-IP: 6.6.6.6\r\nTrue-Client-IP: 6.6.6.6\r\nX-Forwarded-Port: 6\r\nX-Original-URL: /admin\r\n" +
		"X-Rewrite-URL: /admin\r\nX-Forwarded-Prefix: /evil\r\nx-forwarded-server: evil\r\nX-Client-Cert: evil\r\nX_Client_Cert: evil\r\n" +
		"X-Client-IP: 6.6.6.6\r\nCF-Connecting-IP: 6.6.6.6\r\nFastly-Client-IP: 6.6.6.6\r\nX-Cluster-Client-IP: 6.6.6.6\r\n" +
		"X-Forwarded: for=6.6.6.6\r\nX-Host: evil\r\nX-Original-Host: evil\r\n"
	for _, tc := range []struct {
		desc    string
		trusted []netip.Prefix
		kept    bool
	}{
		{"untrusted", nil, false},
		{"trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, true},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", rec.addr)), TrustedProxies: tc.trusted,
				StripHeaders: []string{"X-Client-Cert"}})
			resp, _, _ := rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: h.example\r\n"+spoof+"\r\n")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := rec.last()
			for _, name := range []string{"X-Real-IP", "True-Client-IP", "X-Forwarded-Port", "X-Original-URL", "X-Rewrite-URL",
				"X-Forwarded-Prefix", "X-Forwarded-Server", "X-Client-Cert", "X_Client_Cert", "X-Client-IP", "CF-Connecting-IP",
				"Fastly-Client-IP", "X-Cluster-Client-IP", "X-Forwarded", "X-Host", "X-Original-Host"} {
				if n := len(headerValues(got, name)); (n > 0) != tc.kept {
					t.Errorf("%s: %d at the backend", name, n)
				}
			}
		})
	}
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", rec.addr))})
	rawExchange(t, addr, "GET /x HTTP/1.1\r\nHost: h.example\r\nConnection: Host, X-Forwarded-For, X-Forwarded-Host, Content-Length, X-Drop\r\nX-Drop: 1\r\n\r\n")
	got := rec.last()
	if h := headerValues(got, "Host"); len(h) != 1 || h[0] != "h.example" {
		t.Errorf("Host %q", h)
	}
	if h := headerValues(got, "X-Forwarded-Host"); len(h) != 1 || h[0] != "h.example" {
		t.Errorf("X-Forwarded-Host %q", h)
	}
	if h := headerValues(got, "X-Forwarded-For"); len(h) != 1 || h[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q", h)
	}
	if h := headerValues(got, "X-Drop"); len(h) != 0 {
		t.Errorf("X-Drop, named in Connection, reached the backend")
	}
}

// TestMethodAndVersion: CONNECT gets 405 and versions other than 1.0 and
// 1.1 get 505, before any backend sees them; lbd adds no Content-Type of
// its own either way.
func TestMethodAndVersion(t *testing.T) {
	rec := newRecorder(t, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nraw")
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", rec.addr))})
	for _, tc := range []struct {
		req  string
		code int
	}{
		{"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 405},
		{"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505},
		{"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505},
		{"GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505},
	} {
		resp, _, c := rawExchange(t, addr, tc.req)
		if resp.StatusCode != tc.code || !closedAfter(c) {
			t.Errorf("%q: %d, want %d", requestLine(tc.req), resp.StatusCode, tc.code)
		}
	}
	if n := len(rec.requests()); n != 0 {
		t.Fatalf("backend got %q", rec.requests())
	}
	resp, body, _ := rawExchange(t, addr, "POST / HTTP/1.0\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
	if resp.StatusCode != 200 || string(body) != "raw" || resp.Header["Content-Type"] != nil {
		t.Fatalf("response: %d %q, Content-Type %q", resp.StatusCode, body, resp.Header["Content-Type"])
	}
	if h := headerValues(rec.last(), "Content-Type"); len(h) != 0 {
		t.Fatalf("backend got Content-Type %q", h)
	}
	if !strings.HasSuffix(rec.last(), "\r\n\r\nabc") {
		t.Fatalf("backend got %q", rec.last())
	}
}

// nopStage ends a chain in tests.
type nopStage struct{}

func (nopStage) serve(*exchange) {}

// FuzzRoutedIsForwarded is the differential property of path and Host:
// for any request-target and Host, the route lbd picks is the route the
// request it forwards would pick if it were routed again on the bytes a
// backend receives, and on the path a Go net/http backend dispatches on.
func FuzzRoutedIsForwarded(f *testing.F) {
	for _, seed := range [][2]string{
		{"/admin/..%2Fpublic", "h"}, {"/public/%2e%2e/admin/x", "h"}, {"/admin/./x", "h"}, {"//admin/x", "h"},
		{"http://admin.internal/x", "public.example"}, {"http://public.example/admin/", "public.example"},
		{"/x", "u:p@admin.internal"}, {"*", "h"}, {"/%61dmin/", "h"}, {"/admin%2F", "h"}, {"/a/../../admin/b", "h"},
		{"/public/..;/admin/", "h"}, {"/v1/%2E%2E/admin", "admin.internal"}, {"/admin", "ADMIN.internal."},
	} {
		f.Add(seed[0], seed[1])
	}
	dead := netip.MustParseAddrPort("127.0.0.1:9")
	var routes []Route
	for i, sp := range []route.Spec{
		{Host: "admin.internal"}, {PathPrefix: "/admin/"}, {PathPrefix: "/admin"}, {Host: "*.example", PathPrefix: "/v1/"}, {},
	} {
		routes = append(routes, Route{Name: fmt.Sprint(i), Spec: sp, Pool: testPool(f, "wrr", dead)})
	}
	for _, mode := range []target.Mode{target.Strict, target.MergeSlashes, target.Off} {
		s, err := New(limited(Config{Routes: routes, PathNormalization: mode}), nil)
		if err != nil {
			f.Fatal(err)
		}
		_ = s
	}
	f.Fuzz(func(t *testing.T, tgt, host string) {
		for _, mode := range []target.Mode{target.Strict, target.MergeSlashes, target.Off} {
			s, _ := New(limited(Config{Routes: routes, PathNormalization: mode}), nil)
			st := s.state.Load()
			raw := "GET " + tgt + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
			var ctx fasthttp.RequestCtx
			if err := ctx.Request.Header.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
				return
			}
			x := &exchange{ctx: &ctx, st: st}
			framingStage{next: routeStage{next: nopStage{}}}.serve(x)
			if x.route == nil {
				continue // refused, or no route: nothing forwarded
			}
			routedHost := string(ctx.Request.Header.Host())
			// What fasthttp's client does before it writes the request.
			ctx.Request.URI().DisablePathNormalizing = true
			var buf bytes.Buffer
			bw := bufio.NewWriter(&buf)
			if err := ctx.Request.Write(bw); err != nil {
				t.Fatalf("%v: %q routed to %s, but not written: %v", mode, raw, x.route.Name, err)
			}
			bw.Flush()
			sent := buf.String()
			breq, err := http.ReadRequest(bufio.NewReader(&buf))
			if err != nil {
				t.Fatalf("%v: %q routed to %s, forwarded as %q, which net/http refuses: %v", mode, raw, x.route.Name, sent, err)
			}
			path, _, _ := strings.Cut(breq.RequestURI, "?")
			if string(x.path()) != path || breq.Host != routedHost {
				t.Fatalf("%v: %q: routed on %q and Host %q, forwarded %q", mode, raw, x.path(), routedHost, sent)
			}
			again := st.table.MatchString(breq.Host, path, nil)
			if again < 0 || &st.routes[again] != x.route {
				t.Fatalf("%v: %q routed to %s, forwarded as %q, which routes to %d", mode, raw, x.route.Name, sent, again)
			}
			if decoded := st.table.MatchString(breq.Host, breq.URL.Path, nil); decoded != again {
				t.Fatalf("%v: %q forwarded as %q: a net/http backend dispatches on %q, which routes to %d, not %d",
					mode, raw, sent, breq.URL.Path, decoded, again)
			}
		}
	})
}

// TestClaimHeadersOnOpenRoutes: a forward_claims header is lbd's on the
// whole listener, so a route without auth (perhaps to the same backend)
// does not let a client set it either.
func TestClaimHeadersOnOpenRoutes(t *testing.T) {
	a := newAuthRoutes(t, target.Strict)
	resp, _, _ := rawExchange(t, a.addr, "GET /profile HTTP/1.1\r\nHost: h\r\nX-User-Id: admin\r\nx_user_id: admin\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := a.public.last(); strings.Contains(strings.ToLower(got), "user") {
		t.Fatalf("a forged claim header reached the backend:\n%s", got)
	}
}

// TestBackendResponseFraming: lbd answers in HTTP/1.1 whatever the backend
// speaks, frames a body of unknown length as its client can read it, and
// refuses a 101 the request did not ask for.
func TestBackendResponseFraming(t *testing.T) {
	answer := func(a string) netip.AddrPort {
		return listenRaw(t, func(c rawConn) {
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			io.WriteString(c, a)
		})
	}
	http10 := answer("HTTP/1.0 200 OK\r\n\r\nten-body")
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", http10))})
	resp, body, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.Proto != "HTTP/1.1" || resp.StatusCode != 200 || string(body) != "ten-body" {
		t.Fatalf("HTTP/1.1 client: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: h\r\n\r\n")
	raw, _ := io.ReadAll(c)
	if strings.Contains(strings.ToLower(string(raw)), "chunked") || !strings.HasSuffix(string(raw), "\r\n\r\nten-body") {
		t.Fatalf("HTTP/1.0 client got %q", raw)
	}

	unasked := answer("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW")
	_, addr = startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", unasked))})
	if resp, _, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 502 {
		t.Fatalf("an unasked 101 came through as %d", resp.StatusCode)
	}
}
