package l7

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/l7/route"
)

// countingBackend answers every request with body and counts its open
// connections and requests.
func countingBackend(t *testing.T, body string) (addr netip.AddrPort, open, conns, reqs *atomic.Int64) {
	open, conns, reqs = new(atomic.Int64), new(atomic.Int64), new(atomic.Int64)
	a := listenRaw(t, func(c rawConn) {
		open.Add(1)
		conns.Add(1)
		defer open.Add(-1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			reqs.Add(1)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	return a, open, conns, reqs
}

// TestSlowUploadsLeaveConnections: streamed uploads that stall hold at
// most half of a backend's connections; other requests still get through.
func TestSlowUploadsLeaveConnections(t *testing.T) {
	be, open, _, _ := countingBackend(t, "ok")
	p := testPool(t, "wrr", be)
	_, addr := startServer(t, Config{Routes: simpleRoutes(p), ReadTimeout: 3 * time.Second, ConnectTimeout: 300 * time.Millisecond})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range MaxConnsPerBackend {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nA")
	}
	nettest.Eventually(t, "uploads to reach the backend", func() bool { return open.Load() >= maxUploadsPerBackend })
	resp, _ := get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("with %d stalled uploads, another request got %d", len(conns), resp.StatusCode)
	}
	if n := open.Load(); n > maxUploadsPerBackend+1 {
		t.Fatalf("uploads hold %d backend connections, share %d", n, maxUploadsPerBackend)
	}
}

// TestStreamedResponseCounted: a backend connection streaming a response
// counts as active until the body ends, and its bytes are counted.
func TestStreamedResponseCounted(t *testing.T) {
	release := make(chan struct{})
	chunk := strings.Repeat("x", 64<<10)
	be := listenRaw(t, func(c rawConn) {
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for range 3 {
			fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk)
		}
		<-release
		fmt.Fprintf(c, "%x\r\n%s\r\n0\r\n\r\n", len(chunk), chunk)
		http.ReadRequest(br)
	})
	// However the test ends, the backend goroutine is let go (cleanups run
	// last first, so before listenRaw's waits for it).
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free)
	p := testPool(t, "least_conn", be)
	_, addr := startServer(t, Config{Routes: simpleRoutes(p)})
	b := p.Backends()[0]
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if n := b.Active.Load(); n != 1 {
		t.Fatalf("mid-stream: Active %d, want 1", n)
	}
	free()
	n, _ := io.Copy(io.Discard, resp.Body)
	if n+1000 != 4*int64(len(chunk)) {
		t.Fatalf("client got %d bytes", n+1000)
	}
	nettest.Eventually(t, "the stream to end", func() bool { return b.Active.Load() == 0 })
	_, _, _, sent := b.Totals()
	if sent != 4*uint64(len(chunk)) {
		t.Fatalf("BytesToClient %d, want %d", sent, 4*len(chunk))
	}
}

// TestClientCloseKeepsBackendConn: a client's Connection: close ends the
// client's connection, not the backend's keep-alive one.
func TestClientCloseKeepsBackendConn(t *testing.T) {
	be, _, conns, _ := countingBackend(t, strings.Repeat("z", 200000))
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be))})
	for range 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := io.Copy(io.Discard, resp.Body); n != 200000 {
			t.Fatalf("got %d bytes", n)
		}
		c.Close()
		time.Sleep(5 * time.Millisecond) // let the stream's end return the connection
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("10 responses to clients that close took %d backend connections", n)
	}
}

// TestLingeringEndsWithShutdown: Shutdown does not return while refused
// uploads still linger, nor leaves them behind.
func TestLingeringEndsWithShutdown(t *testing.T) {
	be := newBackend(t, echoHandler)
	s, addr, done := serveUnmanaged(t, Config{Routes: []Route{{Name: "r", Spec: route.Spec{Host: "only.example"}, Pool: testPool(t, "wrr", be.addr)}}})
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 10 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: other\r\nContent-Length: 100000\r\n\r\nAAAA")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 404 {
			t.Fatal(err, resp)
		}
	}
	nettest.Eventually(t, "the refused uploads to linger", func() bool { return s.watch.lingering.Load() == 10 })
	if n := s.OpenConnections(); n != 10 {
		t.Fatalf("OpenConnections %d with 10 lingering", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx)
	<-done
	nettest.Eventually(t, "lingering connections closed", func() bool { return s.watch.lingering.Load() == 0 })
}

// TestStalledSmallBodyNoBackend: a small body that never comes whole is
// answered without troubling a backend.
func TestStalledSmallBodyNoBackend(t *testing.T) {
	be, _, conns, reqs := countingBackend(t, "ok")
	_, addr := startServer(t, Config{Routes: simpleRoutes(testPool(t, "wrr", be)), ReadTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n0123456789")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("%v %v", resp, err)
	}
	if conns.Load() != 0 || reqs.Load() != 0 {
		t.Fatalf("the backend saw %d connections, %d requests", conns.Load(), reqs.Load())
	}
}
