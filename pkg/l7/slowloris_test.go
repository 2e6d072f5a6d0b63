package l7

import (
	"net"
	"net/http"
	"testing"
	"time"
)

// TestSlowloris: a client that never finishes its request header is cut at
// the read timeout, while other clients are served meanwhile.
func TestSlowloris(t *testing.T) {
	b := newBackend(t, echoHandler)
	p := testPool(t, "wrr", b.addr)
	timeout := 300 * time.Millisecond
	_, addr := startServer(t, Config{Name: "edge", Routes: simpleRoutes(p), ReadTimeout: timeout})
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
		t.Fatalf("slow client cut after %v, read timeout %v", el, timeout)
	}
	if b.requests.Load() != 1 {
		t.Fatalf("backend saw %d requests, want only the fast one", b.requests.Load())
	}
}
