package l7

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// wsAccept is the Sec-WebSocket-Accept value for key (RFC 6455 §4.2.2).
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsEchoHandler completes a WebSocket handshake and echoes text frames
// (payloads under 126 bytes; client frames are masked, as RFC 6455 asks).
func wsEchoHandler(w http.ResponseWriter, r *http.Request) {
	if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		http.Error(w, "not a websocket request", http.StatusBadRequest)
		return
	}
	c, rw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Internal\r\n" +
		"X-Internal: secret\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\n" +
		"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n\r\n")
	rw.Flush()
	for {
		var hdr [2]byte
		if _, err := io.ReadFull(rw, hdr[:]); err != nil {
			return
		}
		n := int(hdr[1] & 0x7f)
		var mask [4]byte
		io.ReadFull(rw, mask[:])
		payload := make([]byte, n)
		io.ReadFull(rw, payload)
		for i := range payload {
			payload[i] ^= mask[i%4]
		}
		rw.Write([]byte{0x81, byte(n)}) // FIN + text, unmasked from a server
		rw.Write(payload)
		rw.Flush()
	}
}

func wsFrame(payload string) []byte {
	mask := [4]byte{1, 2, 3, 4}
	f := []byte{0x81, 0x80 | byte(len(payload)), mask[0], mask[1], mask[2], mask[3]}
	for i := 0; i < len(payload); i++ {
		f = append(f, payload[i]^mask[i%4])
	}
	return f
}

// TestWebSocketEcho: a WebSocket upgrade goes through routing to the
// backend, the 101 comes back with the backend's accept key, and frames
// flow both ways through the tunnel.
func TestWebSocketEcho(t *testing.T) {
	b := newBackend(t, wsEchoHandler)
	p := testPool(t, "wrr", b.addr)
	_, addr := startServer(t, Config{Name: "edge", Routes: simpleRoutes(p)})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	key := "dGhlIHNhbXBsZSBub25jZQ=="
	io.WriteString(c, "GET /chat HTTP/1.1\r\nHost: edge\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"+
		"Sec-WebSocket-Key: "+key+"\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key) ||
		!strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		t.Fatalf("handshake: %d %v", resp.StatusCode, resp.Header)
	}
	// The backend's hop-by-hop headers stay behind; the rest comes through.
	if resp.Header.Get("X-Internal") != "" || resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("X-Kept") != "yes" ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
		t.Fatalf("101 headers: %v", resp.Header)
	}
	for _, msg := range []string{"hello", "through the tunnel", ""} {
		c.Write(wsFrame(msg))
		var hdr [2]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, hdr[1]&0x7f)
		io.ReadFull(br, got)
		if hdr[0] != 0x81 || string(got) != msg {
			t.Fatalf("echo of %q: %x %q", msg, hdr, got)
		}
	}
	if n := p.Backends()[0].Active.Load(); n != 1 {
		t.Fatalf("active %d during the tunnel, want 1", n)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Backends()[0].Active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("tunnel still counted after the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
