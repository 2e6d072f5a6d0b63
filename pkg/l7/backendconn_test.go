package l7

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// fusePair returns a backendConn dialled to a loopback listener, and the
// listener's side of the connection.
func fusePair(t *testing.T) (*backendConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := newBackendConn(conn, nil).(*backendConn)
	if c.raw == nil {
		t.Fatal("a TCP connection is not fused")
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer.(*net.TCPConn)
}

// TestBackendConnExchange: small writes are held until the Read, which sends
// them and returns the answer, byte for byte, over many exchanges.
func TestBackendConnExchange(t *testing.T) {
	c, peer := fusePair(t)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			// Answer with the request reversed.
			out := make([]byte, n)
			for i := range n {
				out[i] = buf[n-1-i]
			}
			if _, err := peer.Write(out); err != nil {
				return
			}
		}
	}()
	buf := make([]byte, 4096)
	for i := range 200 {
		req := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*37%4000)
		req[0] = '<'
		// Two writes, as a header and a body: held together.
		if n, err := c.Write(req[:1]); n != 1 || err != nil {
			t.Fatal(n, err)
		}
		if n, err := c.Write(req[1:]); n != len(req)-1 || err != nil {
			t.Fatal(n, err)
		}
		got := make([]byte, 0, len(req))
		for len(got) < len(req) {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("exchange %d: %v", i, err)
			}
			got = append(got, buf[:n]...)
		}
		if got[len(got)-1] != '<' || len(got) != len(req) {
			t.Fatalf("exchange %d: answer of %d bytes ends %q", i, len(got), got[len(got)-1])
		}
	}
	if c.held.Load() != nil {
		t.Fatal("a buffer is held between exchanges")
	}
}

// TestBackendConnLargeWrite: a write past maxHeld goes out at once, after
// what was held before it.
func TestBackendConnLargeWrite(t *testing.T) {
	c, peer := fusePair(t)
	head := []byte("HEAD")
	body := bytes.Repeat([]byte("b"), maxHeld+1)
	c.Write(head)
	done := make(chan error, 1)
	go func() { _, err := c.Write(body); done <- err }()
	got := make([]byte, len(head)+len(body))
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("the peer got %v before any Read", err)
	}
	if !bytes.Equal(got, append(head, body...)) {
		t.Fatal("bytes out of order")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBackendConnFullSocket: when the socket takes only part of what was
// held, the rest is written the usual way and the answer still arrives.
func TestBackendConnFullSocket(t *testing.T) {
	c, peer := fusePair(t)
	tc := c.Conn.(*net.TCPConn)
	tc.SetWriteBuffer(16 << 10)
	peer.SetReadBuffer(16 << 10)
	// Fill both buffers so that the fused send finds the socket full.
	filler := bytes.Repeat([]byte("f"), 1<<20)
	tc.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	sent, _ := tc.Write(filler)
	tc.SetWriteDeadline(time.Time{})
	req := bytes.Repeat([]byte("r"), maxHeld)
	c.Write(req)
	want := sent + len(req)
	go func() {
		buf := make([]byte, 4096)
		total := 0
		for total < want {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			total += n
		}
		peer.Write([]byte("answer"))
	}()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("%q, %v", buf[:n], err)
	}
}

// TestBackendConnPeerClosed: a request sent on a connection the backend
// closed while idle ends in io.EOF, what the client retries, not a hang.
func TestBackendConnPeerClosed(t *testing.T) {
	c, peer := fusePair(t)
	peer.Close()
	// Let the FIN arrive before the request is written: it is consumed
	// by nothing, as on an idle keep-alive connection.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_, err := c.Read(make([]byte, 16))
	if err != io.EOF {
		t.Fatalf("got %v, want io.EOF", err)
	}

	// Reset rather than closed: the send itself fails, which is io.EOF too.
	c2, peer2 := fusePair(t)
	peer2.SetLinger(0)
	peer2.Close()
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	c2.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := c2.Read(make([]byte, 16)); err != io.EOF {
		t.Fatalf("after a reset: got %v, want io.EOF", err)
	}
}

// TestBackendConnDeadline: the fused wait keeps the read deadline.
func TestBackendConnDeadline(t *testing.T) {
	c, peer := fusePair(t)
	c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	c.Write([]byte("ping"))
	_, err := c.Read(make([]byte, 16))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a timeout", err)
	}
	// The request went out all the same.
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("%q, %v", buf, err)
	}
}

// TestBackendConnCloseWhileWaiting: a Close from another goroutine ends a
// fused Read with net.ErrClosed, and a Close drops what is held.
func TestBackendConnCloseWhileWaiting(t *testing.T) {
	c, peer := fusePair(t)
	c.Write([]byte("ping"))
	errc := make(chan error, 1)
	go func() { _, err := c.Read(make([]byte, 16)); errc <- err }()
	// The request reaches the peer only once the Read sends it: then the
	// Read is in its wait.
	buf := make([]byte, 4)
	if _, err := io.ReadFull(peer, buf); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("got %v, want net.ErrClosed", err)
	}

	c2, peer2 := fusePair(t)
	c2.Write([]byte("never sent"))
	c2.Close()
	peer2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peer2.Read(buf); err != io.EOF {
		t.Fatalf("the peer read %q, %v; want io.EOF", buf[:n], err)
	}
}

// TestBackendConnIdleFIN: a backend that half-closed an idle connection
// (its FIN queued here) and goes on absorbing data sends no reset in answer
// to a request. A connection idle past fuseWindow is not fused, so its Read
// finds the FIN at once: io.EOF, which fasthttp retries elsewhere.
func TestBackendConnIdleFIN(t *testing.T) {
	c, peer := fusePair(t)
	peer.CloseWrite()
	go io.Copy(io.Discard, peer)
	// Make sure the FIN is in before the request goes out.
	if n, err := c.Conn.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatal(n, err)
	}
	// Idle past the window, by hand.
	c.lastRead -= int64(2 * fuseWindow)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	start := time.Now()
	if _, err := c.Read(make([]byte, 16)); err != io.EOF {
		t.Fatalf("got %v after %v, want io.EOF", err, time.Since(start))
	}
}

// TestBackendConnHot: a connection that read within fuseWindow holds its
// next request until the Read.
func TestBackendConnHot(t *testing.T) {
	c, peer := fusePair(t)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				return
			}
			peer.Write(buf[:n])
		}
	}()
	buf := make([]byte, 64)
	for i := range 3 {
		c.Write([]byte("ping"))
		if c.held.Load() == nil {
			t.Fatalf("exchange %d: the request was not held", i)
		}
		if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
			t.Fatalf("exchange %d: %q %v", i, buf[:n], err)
		}
	}
}
