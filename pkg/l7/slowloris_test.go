package l7

import (
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSlowloris: a client that never finishes its request header is cut at
// the header timeout, while other clients are served meanwhile.
func TestSlowloris(t *testing.T) {
	b := newBackend(t, echoHandler)
	p := testPool(t, "wrr", b.addr)
	timeout := 300 * time.Millisecond
	_, addr := startServer(t, Config{Name: "edge", Routes: simpleRoutes(p), HeaderTimeout: timeout, ReadTimeout: 10 * time.Second})
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	slow.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	// Meanwhile another client is served.
	if resp, _ := get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+addr+"/fast", nil); resp.StatusCode != 200 {
		t.Fatalf("other client: %d", resp.StatusCode)
	}
	// Trickle a byte now and then: the timeout bounds the whole header,
	// not the gap between bytes.
	slow.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < 20; i++ {
		if _, err := slow.Write([]byte("a")); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	buf := make([]byte, 512)
	for {
		if _, err := slow.Read(buf); err != nil {
			break // closed (after an error answer, or without one)
		}
	}
	el := time.Since(start)
	if el < timeout || el > timeout+3*time.Second {
		t.Fatalf("slow client cut after %v, header timeout %v", el, timeout)
	}
	if b.requests.Load() != 1 {
		t.Fatalf("backend saw %d requests, want only the fast one", b.requests.Load())
	}
}

// TestBodyTimeout: once its header is in, a request has the read timeout,
// not the header timeout, for its body; a body slower than that is cut and
// never reaches the backend.
func TestBodyTimeout(t *testing.T) {
	b := newBackend(t, echoHandler)
	p := testPool(t, "wrr", b.addr)
	header, read := 200*time.Millisecond, 1500*time.Millisecond
	_, addr := startServer(t, Config{Routes: simpleRoutes(p), HeaderTimeout: header, ReadTimeout: read})

	t.Run("slow body within the read timeout", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"))
		// Paced past the header timeout, well within the read timeout.
		for _, ch := range "hello" {
			time.Sleep(100 * time.Millisecond)
			c.Write([]byte(string(ch)))
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4096)
		n, _ := c.Read(buf)
		if got := string(buf[:n]); !strings.HasPrefix(got, "HTTP/1.1 200") || !strings.HasSuffix(got, "POST /up\nhello") {
			t.Fatalf("answer %q", got)
		}
	})
	t.Run("body slower than the read timeout", func(t *testing.T) {
		before := b.requests.Load()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		c.Write([]byte("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		for {
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		if el := time.Since(start); el < read || el > read+3*time.Second {
			t.Fatalf("cut after %v, read timeout %v", el, read)
		}
		if n := b.requests.Load() - before; n != 0 {
			t.Fatalf("backend saw %d requests", n)
		}
	})
}
