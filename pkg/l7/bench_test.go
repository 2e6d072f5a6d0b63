package l7

import (
	"bufio"
	"bytes"
	"net"
	"testing"
)

// proxyLoop starts a Server in front of a raw backend and returns a
// function that sends one keep-alive GET through it and reads the answer.
// The client and the backend allocate nothing per request, so what is
// allocated per call is the proxy's.
func proxyLoop(b testing.TB) func() {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	ln := listenRaw(b, func(c rawConn) {
		br := bufio.NewReader(c)
		for {
			// A request ends with an empty line.
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) == 2 {
					break
				}
			}
			if _, err := c.Write(resp); err != nil {
				return
			}
		}
	})
	_, addr := startServer(b, Config{Routes: simpleRoutes(testPool(b, "wrr", ln))})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	req := []byte("GET /bench HTTP/1.1\r\nHost: bench\r\nUser-Agent: b\r\nAccept: */*\r\n\r\n")
	buf := make([]byte, 4096)
	return func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		got := 0
		for {
			n, err := c.Read(buf[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
			if i := bytes.Index(buf[:got], []byte("\r\n\r\n")); i >= 0 && got >= i+4+2 {
				return
			}
		}
	}
}

// BenchmarkProxy: b.N keep-alive GETs, one at a time; with -benchmem it
// shows the allocations per request.
func BenchmarkProxy(b *testing.B) {
	exchange := proxyLoop(b)
	exchange()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		exchange()
	}
}

// TestProxyNoAllocs: forwarding a plain GET allocates nothing of lbd's per
// request. fasthttp's client makes four small allocations for a response
// it streams (its stream wrapper and two closures, about 190 bytes), which
// is the price of never buffering a response whole; one allocation more in
// a few hundred requests is allowed for the runtime's own.
func TestProxyNoAllocs(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("allocation counts need a build without -race")
	}
	exchange := proxyLoop(t)
	for range 100 {
		exchange()
	}
	if n := testing.AllocsPerRun(500, exchange); n > 4.05 {
		t.Fatalf("%.2f allocations per request", n)
	}
}
