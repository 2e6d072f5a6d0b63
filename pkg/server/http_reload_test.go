package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"github.com/lbd-lb/lbd/internal/conftest"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHTTPReloadLimits: a reload that changes what an l7 server fixes when
// it is made (max_body_bytes, header_timeout, then TLS on) hands the
// listener's socket to a new server. Requests in flight on the old one
// finish, no connection is refused meanwhile, the new limits apply and the
// counters carry on.
func TestHTTPReloadLimits(t *testing.T) {
	dir := t.TempDir()
	release := make(chan struct{})
	var held atomic.Int64
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/hold" {
			held.Add(1)
			<-release
		}
		fmt.Fprintf(w, "%s %d", r.URL.Path, len(body))
	})}
	go be.Serve(l)
	t.Cleanup(func() { be.Close() })
	// The listener and the metrics endpoint bind ports the kernel
	// chooses, read back below.
	cert, key := selfSigned(t, dir, "reloaded")
	conf := func(extra ...any) string {
		cf := conftest.New(t).Global("admin_socket", filepath.Join(dir, "admin.sock"), "metrics_listen", conftest.AnyPort)
		cf.Listener("edge", "protocol", "http").Set(extra...).Route("pool", "web")
		web := cf.Pool("web", "algorithm", "wrr")
		web.Backend(l.Addr().String())
		web.HealthCheck("type", "none")
		return cf.String()
	}
	f := newReloadFixture(t, conf("max_body_bytes", 1024))
	bind, metricsAddr := f.s.ListenerAddr("edge"), f.s.MetricsAddr()
	sockets0, _ := openFDs(t)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	post := func(scheme, path string, n int) (int, string) {
		t.Helper()
		resp, err := client.Post(scheme+"://"+bind+path, "application/octet-stream", bytes.NewReader(make([]byte, n)))
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := post("http", "/big", 2000); code != 413 {
		t.Fatalf("2000 bytes under max_body_bytes 1024: %d", code)
	}

	// A request held at the backend across the reload.
	heldDone := make(chan string, 1)
	go func() {
		c := &http.Client{Timeout: 20 * time.Second}
		resp, err := c.Get("http://" + bind + "/hold")
		if err != nil {
			heldDone <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		heldDone <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	waitSettled(t, "the held request at the backend", func() bool { return held.Load() == 1 })

	// New connections all along the reloads.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", bind, 2*time.Second)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				continue
			}
			c.Close()
			ok.Add(1)
		}
	}()

	f.write(conf("max_body_bytes", 4096, "header_timeout", 3*time.Second))
	if _, err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, body := post("http", "/big", 2000); code != 200 || body != "/big 2000" {
		t.Fatalf("2000 bytes under max_body_bytes 4096: %d %q", code, body)
	}
	close(release)
	if got := <-heldDone; got != "200 /hold 0" {
		t.Fatalf("request held across the reload: %s", got)
	}

	// TLS on, on the same bind.
	f.write(conf("max_body_bytes", 4096, "tls_cert_file", cert, "tls_key_file", key))
	if _, err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	if code, body := post("https", "/tls", 10); code != 200 || body != "/tls 10" {
		t.Fatalf("https after TLS was turned on: %d %q", code, body)
	}
	close(stop)
	wg.Wait()
	if failed.Load() > 0 || ok.Load() == 0 {
		t.Fatalf("connections during the reloads: %d ok, %d failed (%v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	// The servers the socket was handed from stop once their connections
	// are gone: their sockets close, and only the current server still
	// accepts. (fasthttp's own cleaners linger for up to 30 s, so the
	// goroutine count is not compared.)
	client.CloseIdleConnections()
	waitSettled(t, "sockets back to baseline after the handovers", func() bool { s, _ := openFDs(t); return s <= sockets0+2 })
	waitSettled(t, "one server accepting after the handovers", func() bool { return goroutinesIn("(*tap).Accept") == 1 })

	text := scrape(t, metricsAddr)
	for _, want := range []string{
		`lbd_http_rejected_total{listener="edge",reason="body_too_large",route=""} 1`,
		`lbd_http_requests_total{code="200",listener="edge",route="*"} 3`,
		`lbd_listener_connections_total{listener="edge"} `,
		`lbd_listener_rejected_total{listener="edge",reason="max_connections"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, "lbd_http_") && !strings.Contains(l, "bucket") {
				t.Log(l)
			}
		}
	}
}

// goroutinesIn counts the goroutines with fn in their stack.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// reloadedTunnel opens a WebSocket-style tunnel through an http listener,
// checks that it echoes, then reloads with a change that hands the socket
// to a new server and waits past the old one's shutdown_timeout.
func reloadedTunnel(t *testing.T) (*reloadFixture, net.Conn, *bufio.Reader) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A WebSocket-style echo: answers 101, then echoes bytes.
	be := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		io.Copy(c, rw)
	})}
	go be.Serve(l)
	t.Cleanup(func() { be.Close() })
	conf := func(tunnel string) string {
		cf := conftest.New(t).Global("admin_socket", filepath.Join(dir, "admin.sock"), "shutdown_timeout", 200*time.Millisecond)
		cf.Listener("edge", "protocol", "http", "tunnel_timeout", tunnel).Route("pool", "ws")
		ws := cf.Pool("ws", "algorithm", "wrr")
		ws.Backend(l.Addr().String())
		ws.HealthCheck("type", "none")
		return cf.String()
	}
	f := newReloadFixture(t, conf("1h"))
	bind := f.s.ListenerAddr("edge")
	c, err := net.Dial("tcp", bind)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2V5\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatal(resp, err)
	}
	echo := func(msg string) {
		t.Helper()
		io.WriteString(c, msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != msg {
			t.Fatalf("echo %q: %q, %v", msg, got, err)
		}
	}
	echo("before")
	// A changed tunnel_timeout takes a new server on the socket.
	f.write(conf("2h"))
	if _, err := f.s.Reload(); err != nil {
		t.Fatal(err)
	}
	// Past the old server's shutdown_timeout.
	time.Sleep(600 * time.Millisecond)
	echo("after")
	// New connections go to the new server meanwhile.
	c2, err := net.Dial("tcp", bind)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	return f, c, br
}

// TestHTTPReloadKeepsTunnels: a reload that hands an http listener's socket
// to a new server lets a WebSocket on the old one go on past
// shutdown_timeout, as old workers do in HAProxy and nginx; it ends when
// its ends close (or at tunnel_timeout).
func TestHTTPReloadKeepsTunnels(t *testing.T) {
	_, c, br := reloadedTunnel(t)
	io.WriteString(c, "still")
	got := make([]byte, 5)
	if _, err := io.ReadFull(br, got); err != nil || string(got) != "still" {
		t.Fatalf("%q, %v", got, err)
	}
}

// TestShutdownClosesRetiredTunnels: a WebSocket a reload left on the old
// server is closed by Shutdown like any other connection.
func TestShutdownClosesRetiredTunnels(t *testing.T) {
	f, c, br := reloadedTunnel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	f.s.Shutdown(ctx)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "x")
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the retired tunnel still echoes after Shutdown")
	}
}
