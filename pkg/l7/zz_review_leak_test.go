package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestZZLeaks: clients that go away mid-response, mid-request-body, during
// bufferSmall/bufferWhole, and backends cut by the watchdog: afterwards no
// backend connection, goroutine, descriptor or Active count is left over.
func TestZZLeaks(t *testing.T) {
	var beOpen atomic.Int64
	big := strings.Repeat("y", 1<<20)
	be := listenRaw(t, func(c rawConn) {
		beOpen.Add(1)
		defer beOpen.Add(-1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, err = io.Copy(io.Discard, req.Body)
			if err != nil {
				return
			}
			switch req.URL.Path {
			case "/cl":
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
			case "/chunked":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
				for i := 0; i < 16; i++ {
					fmt.Fprintf(c, "%x\r\n%s\r\n", 65536, big[:65536])
				}
				io.WriteString(c, "0\r\n\r\n")
			case "/small-slow":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 32768\r\n\r\n")
				c.Write([]byte(big[:16384]))
				time.Sleep(100 * time.Millisecond)
				c.Write([]byte(big[:16384]))
			case "/stall":
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n")
				c.Write([]byte(big[:100000]))
				time.Sleep(2 * time.Second)
				return
			default:
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		}
	})
	p := testPool(t, "least_conn", be)
	s, addr := startServer(t, Config{Routes: simpleRoutes(p), ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond})
	b := p.Backends()[0]

	get(t, http.DefaultClient, "http://"+addr+"/", nil)
	time.Sleep(100 * time.Millisecond)
	g0, fd0 := runtime.NumGoroutine(), zzFDs()

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c, bufio.NewReader(c)
	}
	const rounds = 30
	for i := 0; i < rounds; i++ {
		// A: streamed response of known length, client gone mid-body
		c, br := dial()
		fmt.Fprintf(c, "GET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err == nil {
			io.ReadFull(resp.Body, make([]byte, 5000))
		}
		c.Close()
		// B: chunked
		c, br = dial()
		fmt.Fprintf(c, "GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err == nil {
			io.ReadFull(resp.Body, make([]byte, 5000))
		}
		c.Close()
		// C: request body of known length, client gone mid-body
		c, _ = dial()
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n%s", big[:30000])
		time.Sleep(10 * time.Millisecond)
		c.Close()
		// D: chunked request body, client gone mid-body
		c, _ = dial()
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n", 30000, big[:30000])
		time.Sleep(10 * time.Millisecond)
		c.Close()
		// E: client gone during bufferSmall
		c, _ = dial()
		fmt.Fprintf(c, "GET /small-slow HTTP/1.1\r\nHost: x\r\n\r\n")
		time.Sleep(20 * time.Millisecond)
		c.Close()
		// F: HTTP/1.0 client gone during bufferWhole
		c, _ = dial()
		fmt.Fprintf(c, "GET /chunked HTTP/1.0\r\nHost: x\r\n\r\n")
		c.Close()
	}
	// G: backend stalls mid-body: the watchdog cuts it (read timeout)
	for i := 0; i < 5; i++ {
		c, br := dial()
		fmt.Fprintf(c, "GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(br, nil); err == nil {
			n, err := io.Copy(io.Discard, resp.Body)
			if i == 0 {
				t.Logf("stall: client got %d bytes, %v", n, err)
			}
		}
		c.Close()
	}
	time.Sleep(1500 * time.Millisecond)
	var hcConns, hcIdle int
	s.clients.Range(func(k, v any) bool {
		hcConns += v.(*fasthttp.HostClient).ConnsCount()
		hcIdle += v.(*fasthttp.HostClient).IdleConnsCount()
		return true
	})
	s.watch.mu.Lock()
	watched := len(s.watch.conns)
	s.watch.mu.Unlock()
	t.Logf("after: goroutines %+d, fds %+d, backend conns open (backend side)=%d, HostClient conns=%d idle=%d, Active=%d, watched=%d, lingering=%d, open client conns=%d",
		runtime.NumGoroutine()-g0, zzFDs()-fd0, beOpen.Load(), hcConns, hcIdle, b.Active.Load(), watched, s.watch.lingering.Load(), s.OpenConnections())
	if hcConns != hcIdle || b.Active.Load() != 0 {
		t.Errorf("BUG: backend connections in use after every client left")
	}
}
