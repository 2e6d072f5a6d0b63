package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/lbd-lb/lbd/healthcheck"
	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/l7/route"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// testBackend is a net/http server on loopback that counts the requests and
// connections it sees and answers with the handler given.
type testBackend struct {
	*httptest.Server
	addr     netip.AddrPort
	requests atomic.Int64
	conns    atomic.Int64
}

func newBackend(t testing.TB, h http.HandlerFunc) *testBackend {
	t.Helper()
	b := &testBackend{}
	b.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		h(w, r)
	}))
	b.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	b.addr = b.Listener.Addr().(*net.TCPAddr).AddrPort()
	return b
}

// echoHandler answers 200 with the method, URI, and body, and copies every
// request header into the response as "X-Got-<name>".
func echoHandler(w http.ResponseWriter, r *http.Request) {
	echoHeaders(w, r)
	echoBody(w, r)
}

func echoHeaders(w http.ResponseWriter, r *http.Request) {
	for k, v := range r.Header {
		for _, vv := range v {
			w.Header().Add("X-Got-"+k, vv)
		}
	}
	w.Header().Set("X-Got-Host", r.Host)
}

func echoBody(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s %s\n", r.Method, r.RequestURI)
	w.Write(body)
}

func testPool(t testing.TB, algorithm string, addrs ...netip.AddrPort) *pool.Pool {
	t.Helper()
	spec := pool.Spec{Name: "p", Algorithm: algorithm, Hash: "source_ip", MaglevTableSize: 65537,
		PassiveFailures: 1000, HealthCheck: healthcheck.Config{Type: healthcheck.TypeNone}}
	for i, a := range addrs {
		spec.Backends = append(spec.Backends, pool.BackendSpec{Name: fmt.Sprintf("b%d", i), Address: a, Weight: 100})
	}
	p, err := pool.New(spec, pool.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return a
}

// simpleRoutes is one catch-all route to p.
func simpleRoutes(p *pool.Pool) []Route {
	return []Route{{Name: "all", Spec: route.Spec{}, Pool: p}}
}

// limited gives each limit cfg leaves at zero the value an http listener
// has by default, as pkg/server would pass it.
func limited(cfg Config) Config {
	d := config.ListenerDefaults(config.ProtocolHTTP)
	set := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	set(&cfg.HeaderTimeout, d.HeaderTimeout)
	set(&cfg.ReadTimeout, d.ReadTimeout)
	set(&cfg.WriteTimeout, d.WriteTimeout)
	set(&cfg.IdleTimeout, d.IdleTimeout)
	set(&cfg.TunnelTimeout, d.TunnelTimeout)
	set(&cfg.ConnectTimeout, d.ConnectTimeout)
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = int(d.MaxBodyBytes)
	}
	if cfg.SourcePrefixV6 == 0 {
		cfg.SourcePrefixV6 = d.SourcePrefixV6
	}
	return cfg
}

// startServer runs a Server for cfg on 127.0.0.1:0 and returns it and its
// address.
func startServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	s, addr, done := serveUnmanaged(t, cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return s, addr
}

// serveUnmanaged runs a Server for cfg on 127.0.0.1:0 whose Shutdown or
// Retire is the test's business; done receives what Serve returns.
func serveUnmanaged(t testing.TB, cfg Config) (*Server, string, <-chan error) {
	t.Helper()
	s, err := New(limited(cfg), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	return s, ln.Addr().String(), done
}

// getEventStream asks addr for an event stream.
func getEventStream(t testing.TB, addr string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/events", nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// rawExchange writes req on a fresh connection and reads one response.
func rawExchange(t testing.TB, addr, req string) (*http.Response, []byte, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, &bufConn{Conn: c, r: br}
}

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// closedAfter reports whether the server closed c (EOF within a second).
func closedAfter(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(time.Second))
	var buf [1]byte
	_, err := c.Read(buf[:])
	return err == io.EOF || (err != nil && !isTimeout(err))
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func get(t testing.TB, c *http.Client, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	resp, body, err := tryGet(c, url, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// tryGet is get for a goroutine other than the test's: it reports failure
// instead of failing the test.
func tryGet(c *http.Client, url string, hdr map[string]string) (*http.Response, string, error) {
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body), nil
}

// authFixture is an echo backend behind one route with HS256 auth whose
// sub claim is forwarded as header, at the fixed time now; sign makes
// tokens with the route's secret.
type authFixture struct {
	addr string
	be   *testBackend
	now  time.Time
	sign func(jwt.MapClaims) string
}

func newAuthFixture(t *testing.T, header string) *authFixture {
	t.Helper()
	secret := []byte("0123456789abcdef0123456789abcdef")
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	v, err := auth.New(auth.Config{Name: "a", Algorithms: []string{"HS256"}, HMACSecretFile: file,
		ForwardClaims: map[string]string{"sub": header}})
	if err != nil {
		t.Fatal(err)
	}
	f := &authFixture{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), be: newBackend(t, echoHandler)}
	f.sign = func(claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, f.addr = startServer(t, Config{Now: func() time.Time { return f.now },
		Routes: []Route{{Name: "r", Pool: testPool(t, "wrr", f.be.addr), Auth: v}}})
	return f
}

// aliceToken is a valid token for sub alice.
func (f *authFixture) aliceToken() string {
	return f.sign(jwt.MapClaims{"sub": "alice", "exp": f.now.Add(time.Hour).Unix()})
}
