package l7

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/pkg/pool"
)

// wsDial opens a WebSocket through addr, with conn as its Connection header.
func wsDial(t *testing.T, addr, conn string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, br, resp, err := tryWSDial(addr, conn)
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	if err != nil {
		t.Fatal(err)
	}
	return c, br, resp
}

// tryWSDial is wsDial for a goroutine other than the test's: it reports
// failure instead of failing the test, and the caller closes c.
func tryWSDial(addr, conn string) (net.Conn, *bufio.Reader, *http.Response, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, nil, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: "+conn+"\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	return c, br, resp, err
}

// wsAcceptOnly answers the upgrade and then runs then on the hijacked
// backend connection.
func wsAcceptOnly(then func(c net.Conn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
		rw.Flush()
		then(c)
	}
}

// released waits until the tunnel to p's backend is released and no client
// connection is left under s's watchdog.
func released(t *testing.T, s *Server, p *pool.Pool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s.watch.mu.Lock()
		clients := 0
		for c := range s.watch.conns {
			if c.client {
				clients++
			}
		}
		s.watch.mu.Unlock()
		active := p.Backends()[0].Active.Load()
		if active == 0 && clients == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d tunnels active, %d client connections watched", within, active, clients)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTunnelBackendCloses: a backend that drops the connection after its
// 101 is passed on at once: the client sees the close, and once it closes
// too, as a WebSocket client does, nothing is left behind. (fasthttp's
// hijacked connection does not close on Close.) Until then the tunnel
// stays, as a half-closed one does (TestTunnelBackendHalfClose): a FIN does
// not tell a backend that is gone from one that still reads.
func TestTunnelBackendCloses(t *testing.T) {
	b := newBackend(t, wsAcceptOnly(func(net.Conn) {}))
	p := testPool(t, "wrr", b.addr)
	s, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	c, br, resp := wsDial(t, addr, "Upgrade")
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("client read %v, want the close", err)
	}
	c.Close()
	released(t, s, p, 5*time.Second)
}

// TestTunnelStuckBackend: a backend that stops reading while the client
// fills the tunnel, and one that ignores the client's half-close, are both
// released at the tunnel timeout: the cut closes both sides.
func TestTunnelStuckBackend(t *testing.T) {
	tunnel := 300 * time.Millisecond
	for _, tc := range []struct {
		name   string
		client func(c net.Conn)
	}{
		{"backend not reading", func(c net.Conn) {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 64<<10)
			for {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}},
		{"client half-closed", func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold := make(chan struct{})
			defer close(hold)
			b := newBackend(t, wsAcceptOnly(func(net.Conn) { <-hold }))
			p := testPool(t, "wrr", b.addr)
			s, addr := startServer(t, Config{Routes: simpleRoutes(p), TunnelTimeout: tunnel})
			c, _, resp := wsDial(t, addr, "Upgrade")
			if resp.StatusCode != 101 {
				t.Fatal(resp.Status)
			}
			tc.client(c)
			released(t, s, p, tunnel+3*time.Second)
		})
	}
}

// TestUpgradeConnectionClose: an upgrade that also asks to close the
// connection is still tunnelled, and released when the client leaves.
func TestUpgradeConnectionClose(t *testing.T) {
	b := newBackend(t, wsEchoHandler)
	p := testPool(t, "wrr", b.addr)
	s, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	c, br, resp := wsDial(t, addr, "Upgrade, close")
	if resp.StatusCode != 101 {
		t.Fatal(resp.Status)
	}
	c.Write(wsFrame("hi"))
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatalf("no echo: %v", err)
	}
	c.Close()
	released(t, s, p, 5*time.Second)
}

// TestUpgradeDuringShutdown: a 101 that comes back while the server shuts
// down still hands the connection over, and Shutdown closes it at the end
// of its time: nothing is left counted.
func TestUpgradeDuringShutdown(t *testing.T) {
	arrived := make(chan struct{})
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		time.Sleep(200 * time.Millisecond)
		wsEchoHandler(w, r)
	})
	p := testPool(t, "wrr", b.addr)
	s, addr, _ := serveUnmanaged(t, Config{Routes: simpleRoutes(p)})
	type upgrade struct {
		c    net.Conn
		resp *http.Response
		err  error
	}
	res := make(chan upgrade, 1)
	go func() {
		c, _, resp, err := tryWSDial(addr, "Upgrade")
		res <- upgrade{c, resp, err}
	}()
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.Shutdown(ctx)
	u := <-res
	if u.c != nil {
		defer u.c.Close()
	}
	if u.err != nil {
		t.Fatal(u.err)
	}
	if u.resp.StatusCode != 101 {
		t.Fatalf("status %d", u.resp.StatusCode)
	}
	released(t, s, p, 5*time.Second)
}

// TestRetireClosesKeepAlive: a request still in flight when Retire's time
// is up is answered with Connection: close, so no further request on that
// connection runs under the retired server's configuration.
func TestRetireClosesKeepAlive(t *testing.T) {
	arrived := make(chan struct{}, 1)
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			time.Sleep(400 * time.Millisecond)
		}
		io.WriteString(w, "ok "+r.URL.Path)
	})
	s, addr, _ := serveUnmanaged(t, Config{Routes: simpleRoutes(testPool(t, "wrr", b.addr))})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s.Retire(ctx)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if !resp.Close {
		t.Error("the answer after Retire keeps the connection open")
	}
	io.WriteString(c, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(br, nil); err == nil {
		t.Fatalf("the retired server answered another request: %d", resp.StatusCode)
	}
}
