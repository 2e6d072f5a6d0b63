package l7

import (
	"bufio"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/lbd-lb/lbd/pkg/l7/route"
)

// Header names are case-insensitive (RFC 9110 §5.1): every header lbd
// removes, replaces or matches must be found whatever case the client or
// the backend wrote it in.

func TestHeaderCaseRequest(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	resp, _, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: front.test\r\n"+
		"x-forwarded-for: 6.6.6.6\r\nX-FORWARDED-PROTO: https\r\nx-forwarded-host: evil\r\nforwarded: for=6.6.6.6\r\n"+
		"connection: x-secret, X-OTHER\r\nx-secret: s\r\nx-other: o\r\nkeep-alive: 1\r\nproxy-connection: x\r\n"+
		"te: trailers\r\nproxy-authorization: p\r\ntrailer: t\r\nx-keep: k\r\n\r\n")
	if got := resp.Header.Values("X-Got-X-Forwarded-For"); len(got) != 1 || got[0] != "127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want only 127.0.0.1", got)
	}
	if got := resp.Header.Values("X-Got-X-Forwarded-Proto"); len(got) != 1 || got[0] != "http" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	if got := resp.Header.Values("X-Got-X-Forwarded-Host"); len(got) != 1 || got[0] != "front.test" {
		t.Errorf("X-Forwarded-Host %q", got)
	}
	for _, h := range []string{"Forwarded", "Connection", "X-Secret", "X-Other", "Keep-Alive", "Proxy-Connection", "Te", "Proxy-Authorization", "Trailer"} {
		if v := resp.Header.Values("X-Got-" + h); len(v) > 0 {
			t.Errorf("backend got %s: %q", h, v)
		}
	}
	if resp.Header.Get("X-Got-X-Keep") != "k" {
		t.Errorf("end-to-end header lost: %v", resp.Header)
	}
}

func TestHeaderCaseUpgrade(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	resp, _, c := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nconnection: upgrade, http2-settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Errorf("lower-case h2c upgrade: %d, want 400", resp.StatusCode)
	}
	if !closedAfter(c) {
		t.Error("connection left open")
	}
	if n := be.requests.Load(); n != 0 {
		t.Errorf("backend saw %d requests", n)
	}
}

func TestHeaderCaseForwardClaims(t *testing.T) {
	f := newAuthFixture(t, "X-User")
	addr, tok := f.addr, f.aliceToken()
	resp, _, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nauthorization: Bearer "+tok+"\r\nx-user: mallory\r\nX-USER: eve\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Values("X-Got-X-User"); len(got) != 1 || got[0] != "alice" {
		t.Errorf("X-User %q, want only the claim", got)
	}
}

func TestHeaderCaseRouteMatch(t *testing.T) {
	a := newBackend(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("tenant-a")) })
	other := newBackend(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("other")) })
	_, addr := startServer(t, Config{Routes: []Route{
		{Name: "a", Spec: route.Spec{Headers: map[string]string{"X-Tenant": "a"}}, Pool: testPool(t, "wrr", a.addr)},
		{Name: "rest", Pool: testPool(t, "wrr", other.addr)},
	}})
	for _, name := range []string{"X-Tenant", "x-tenant", "X-TENANT"} {
		_, body, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n"+name+": a\r\n\r\n")
		if string(body) != "tenant-a" {
			t.Errorf("%s: routed to %q", name, body)
		}
	}
}

// scriptedBackend answers every request on every connection with resp, as is.
func scriptedBackend(t *testing.T, resp string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					req.Body.Close()
					if _, err := c.Write([]byte(resp)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestHeaderCaseResponse(t *testing.T) {
	for _, tc := range []struct{ desc, resp string }{
		{"content-length", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: x-resp-hop\r\nx-resp-hop: 1\r\n" +
			"keep-alive: timeout=5\r\nproxy-authenticate: Basic\r\nx-end: e\r\n\r\nok"},
		{"chunked", "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: x-resp-hop\r\nx-resp-hop: 1\r\n" +
			"keep-alive: timeout=5\r\nproxy-authenticate: Basic\r\nx-end: e\r\n\r\n2\r\nok\r\n0\r\n\r\n"},
		{"no hop headers", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-End: e\r\n\r\nok"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			be := scriptedBackend(t, tc.resp)
			p := testPool(t, "wrr", mustAddrPort(t, be))
			_, addr := startServer(t, Config{Routes: simpleRoutes(p)})
			resp, body, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
			if resp.StatusCode != 200 || string(body) != "ok" || resp.Header.Get("X-End") != "e" {
				t.Fatalf("response %d %q %v", resp.StatusCode, body, resp.Header)
			}
			for _, h := range []string{"X-Resp-Hop", "Keep-Alive", "Proxy-Authenticate"} {
				if v := resp.Header.Values(h); len(v) > 0 {
					t.Errorf("client got %s: %q", h, v)
				}
			}
			if v := resp.Header.Values("Connection"); len(v) > 0 && !strings.EqualFold(v[0], "keep-alive") {
				t.Errorf("client got Connection %q", v)
			}
		})
	}
}

func mustAddrPort(t *testing.T, s string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

// TestHeaderUnderscores: CGI-style servers read X_Forwarded_For as
// X-Forwarded-For, so such a name for a hop-by-hop or forwarding header is
// refused; other names with underscores pass.
func TestHeaderUnderscores(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	for _, h := range []string{"X_Forwarded_For: 6.6.6.6", "x_forwarded-host: evil", "Keep_Alive: 1", "FORWARDED_: x"} {
		if strings.HasSuffix(strings.SplitN(h, ":", 2)[0], "_") {
			continue // not an imitation of any header
		}
		resp, _, c := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\n"+h+"\r\n\r\n")
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", h, resp.StatusCode)
		}
		if !closedAfter(c) {
			t.Errorf("%s: connection left open", h)
		}
	}
	if n := be.requests.Load(); n != 0 {
		t.Fatalf("backend saw %d requests", n)
	}
	resp, _, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nX_Custom: v\r\n\r\n")
	if resp.StatusCode != 200 || resp.Header.Get("X-Got-X_custom") != "v" {
		t.Fatalf("X_Custom: %d %v", resp.StatusCode, resp.Header)
	}
}

// TestForwardedClaimsKept: a client can neither imitate a forward_claims
// header with underscores nor have Connection name it away.
func TestForwardedClaimsKept(t *testing.T) {
	f := newAuthFixture(t, "X-User-Id")
	addr, tok := f.addr, f.aliceToken()
	resp, _, _ := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer "+tok+
		"\r\nConnection: X-User-Id\r\nX_User_Id: mallory\r\nx_user-id: eve\r\n\r\n")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Values("X-Got-X-User-Id"); len(got) != 1 || got[0] != "alice" {
		t.Errorf("X-User-Id %q, want the claim", got)
	}
	for k := range resp.Header {
		if strings.Contains(k, "_") {
			t.Errorf("backend got %s: %q", k, resp.Header[k])
		}
	}
}

// TestChunkedTrailers: trailer fields of a chunked request cannot bring a
// forwarding header or a forward_claims header to the backend: the request
// is refused, or they are gone.
func TestChunkedTrailers(t *testing.T) {
	be := newBackend(t, echoHandler)
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be.addr))})
	for _, trailer := range []string{"X-Forwarded-For: 6.6.6.6", "Keep-Alive: 1", "X-Forwarded-Host: evil", "Forwarded: for=6.6.6.6"} {
		name := strings.SplitN(trailer, ":", 2)[0]
		before := be.requests.Load()
		resp, body, _ := rawExchange(t, addr, "POST / HTTP/1.1\r\nHost: front.test\r\nTransfer-Encoding: chunked\r\nTrailer: "+name+
			"\r\n\r\n5\r\nhello\r\n0\r\n"+trailer+"\r\n\r\n")
		t.Logf("%s in a trailer: %d", name, resp.StatusCode)
		switch resp.StatusCode {
		case 400:
			if be.requests.Load() != before {
				t.Errorf("%s: refused, yet the backend saw it", name)
			}
		case 200:
			if !strings.HasSuffix(string(body), "hello") {
				t.Errorf("%s: body %q", name, body)
			}
			for _, v := range resp.Header.Values("X-Got-" + name) {
				if strings.Contains(v, "6.6.6.6") || v == "evil" || v == "1" {
					t.Errorf("%s from a trailer reached the backend: %q", name, v)
				}
			}
		default:
			t.Errorf("%s: status %d", name, resp.StatusCode)
		}
	}
}
