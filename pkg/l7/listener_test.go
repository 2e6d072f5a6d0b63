package l7

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// TestNeedsSuccessor pins the one rule for when a change of Config takes a
// new Server on the socket instead of an Update.
func TestNeedsSuccessor(t *testing.T) {
	base := limited(Config{Name: "l"})
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	for _, tc := range []struct {
		desc   string
		change func(*Config)
		want   bool
	}{
		{"nothing", func(*Config) {}, false},
		{"routes and retries", func(c *Config) { c.Routes, c.Retries = simpleRoutes(nil), 3 }, false},
		{"a new certificate", func(c *Config) { c.Cert = &tls.Certificate{} }, true},
		{"header timeout", func(c *Config) { c.HeaderTimeout++ }, true},
		{"idle timeout", func(c *Config) { c.IdleTimeout++ }, true},
		{"max body bytes", func(c *Config) { c.MaxBodyBytes++ }, true},
		{"max connections", func(c *Config) { c.MaxConnections++ }, true},
		{"connect timeout", func(c *Config) { c.ConnectTimeout++ }, true},
		{"PROXY header on", func(c *Config) { c.AcceptProxyProtocol = true }, true},
		{"trusted proxies without PROXY headers", func(c *Config) { c.TrustedProxies = trusted }, false},
	} {
		c := base
		tc.change(&c)
		if got := NeedsSuccessor(base, c); got != tc.want {
			t.Errorf("%s: NeedsSuccessor = %v, want %v", tc.desc, got, tc.want)
		}
	}
	withProxy := base
	withProxy.AcceptProxyProtocol = true
	moreTrusted := withProxy
	moreTrusted.TrustedProxies = trusted
	if !NeedsSuccessor(withProxy, moreTrusted) {
		t.Error("trusted proxies of PROXY headers changed: no successor")
	}
	tlsOn := base
	tlsOn.Cert = &tls.Certificate{}
	otherCert := tlsOn
	otherCert.Cert = &tls.Certificate{}
	if NeedsSuccessor(tlsOn, otherCert) {
		t.Error("a renewed certificate takes a successor; it is stored in place")
	}
}

// TestListenerHandover: a change that needs a successor moves the socket
// to it; a request already in flight on the old server completes, and the
// next connection is served by the new one.
func TestListenerHandover(t *testing.T) {
	b := newBackend(t, echoHandler)
	cfg := limited(Config{Name: "l", Routes: simpleRoutes(testPool(t, "wrr", b.addr))})
	l, err := Listen(netip.MustParseAddrPort("127.0.0.1:0"), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Stop(ctx)
	}()
	// A keep-alive connection with one request answered: it stays with
	// the old server.
	old, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	old.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(old, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if st := readStatus(t, old); st != "200" {
		t.Fatalf("before the change: status %s", st)
	}
	next := cfg
	next.MaxBodyBytes++
	ch, err := l.Prepare(next)
	if err != nil {
		t.Fatal(err)
	}
	first := l.Server()
	l.Apply(ch, 5*time.Second)
	if l.Server() == first {
		t.Fatal("no successor took the socket over")
	}
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /b HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if st := readStatus(t, c); st != "200" {
		t.Fatalf("after the change: status %s", st)
	}
	nettest.Eventually(t, "the new server to count the connection", func() bool { return l.Server().OpenConnections() == 1 })
}

// readStatus reads one response's status line and header from c, and its
// body by Content-Length, and returns the status code.
func readStatus(t *testing.T, c net.Conn) string {
	t.Helper()
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for !strings.Contains(string(buf), "\r\n\r\n") {
		n, err := c.Read(tmp)
		if err != nil {
			t.Fatalf("reading a response: %v (%q)", err, buf)
		}
		buf = append(buf, tmp[:n]...)
	}
	f := strings.Fields(string(buf))
	if len(f) < 2 {
		t.Fatalf("response %q", buf)
	}
	return f[1]
}
