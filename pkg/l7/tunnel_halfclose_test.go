package l7

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestTunnelRetriesConnectFailure: a WebSocket upgrade reaches its backend
// the way a proxied request does (tryBackends): a backend that refuses the
// connect is counted (a connect error, a passive failure) and the next one
// is tried, within Retries; with no retry left the client gets 502.
func TestTunnelRetriesConnectFailure(t *testing.T) {
	live := newBackend(t, wsEchoHandler)
	dead := deadAddr(t)
	p := testPool(t, "wrr", dead, live.addr)
	_, addr := startServer(t, Config{Routes: simpleRoutes(p), Retries: 1})
	for i := range 4 {
		c, _, resp := wsDial(t, addr, "Upgrade")
		if resp.StatusCode != 101 {
			t.Fatalf("upgrade #%d: %d", i, resp.StatusCode)
		}
		c.Close()
	}
	_, deadErrs, _, _ := p.Backends()[0].Totals()
	_, liveErrs, _, _ := p.Backends()[1].Totals()
	if deadErrs == 0 || liveErrs != 0 {
		t.Fatalf("connect errors: dead backend %d, live one %d", deadErrs, liveErrs)
	}

	// No retry: a pick of the dead backend is the answer.
	only := testPool(t, "wrr", dead)
	s, addr := startServer(t, Config{Routes: simpleRoutes(only)})
	_, _, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 502 {
		t.Fatalf("upgrade to a dead backend: %d, want 502", resp.StatusCode)
	}
	if _, errs, _, _ := only.Backends()[0].Totals(); errs != 1 {
		t.Fatalf("%d connect errors counted, want 1", errs)
	}
	if n := s.Stats().Routes[0].BackendErrors; n != 1 {
		t.Fatalf("route backend errors %d, want 1", n)
	}
}

// halfCloseBackend answers the upgrade, then runs then on the backend's
// side of the tunnel; what then reports goes to got.
func halfCloseBackend(t *testing.T, then func(c *net.TCPConn) string) (*testBackend, <-chan string) {
	t.Helper()
	got := make(chan string, 1)
	b := newBackend(t, wsAcceptOnly(func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		got <- then(c.(*net.TCPConn))
	}))
	return b, got
}

// TestTunnelClientHalfClose: a client that half-closes after sending still
// receives everything the backend sends afterwards: the backend reads the
// client's bytes, then EOF, and only then answers, and the client reads
// that answer, then EOF. The tunnel is released once both are done.
func TestTunnelClientHalfClose(t *testing.T) {
	b, got := halfCloseBackend(t, func(c *net.TCPConn) string {
		in, err := io.ReadAll(c) // to the client's half-close
		if err != nil {
			return "read: " + err.Error()
		}
		if _, err := io.WriteString(c, "answer after your EOF"); err != nil {
			return "write: " + err.Error()
		}
		return string(in)
	})
	p := testPool(t, "wrr", b.addr)
	s, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	c, br, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	io.WriteString(c, "all the client has to say")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br) // to the backend's close
	if err != nil {
		t.Fatalf("client read %q, then %v", rest, err)
	}
	if string(rest) != "answer after your EOF" {
		t.Fatalf("client received %q after its half-close", rest)
	}
	if in := <-got; in != "all the client has to say" {
		t.Fatalf("backend received %q before EOF", in)
	}
	released(t, s, p, 5*time.Second)
}

// TestTunnelBackendHalfClose: a backend that half-closes after sending
// still receives everything the client sends afterwards: the client reads
// the backend's bytes, then EOF, and only then sends, and the backend
// reads that, then EOF. The tunnel is released once both are done.
func TestTunnelBackendHalfClose(t *testing.T) {
	b, got := halfCloseBackend(t, func(c *net.TCPConn) string {
		if _, err := io.WriteString(c, "all the backend has to say"); err != nil {
			return "write: " + err.Error()
		}
		if err := c.CloseWrite(); err != nil {
			return "close write: " + err.Error()
		}
		in, err := io.ReadAll(c) // to the client's half-close
		if err != nil {
			return "read: " + err.Error()
		}
		return string(in)
	})
	p := testPool(t, "wrr", b.addr)
	s, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	c, br, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	in, err := io.ReadAll(br) // to the backend's half-close
	if err != nil || string(in) != "all the backend has to say" {
		t.Fatalf("client received %q, then %v", in, err)
	}
	if _, err := io.WriteString(c, "answer after your EOF"); err != nil {
		t.Fatalf("client cannot send after the backend's half-close: %v", err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest := <-got; rest != "answer after your EOF" {
		t.Fatalf("backend received %q after its half-close", rest)
	}
	released(t, s, p, 5*time.Second)
}
