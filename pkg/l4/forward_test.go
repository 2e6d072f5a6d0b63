package l4

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// stream is a deterministic pseudo-random byte source.
type stream struct {
	r    *rand.ChaCha8
	left int64
}

func newStream(seed byte, n int64) *stream {
	var s [32]byte
	s[0] = seed
	return &stream{r: rand.NewChaCha8(s), left: n}
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > s.left {
		p = p[:s.left]
	}
	s.r.Read(p)
	s.left -= int64(len(p))
	return len(p), nil
}

func digest(r io.Reader) ([32]byte, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, n, err
}

func want(seed byte, n int64) [32]byte {
	sum, _, _ := digest(newStream(seed, n))
	return sum
}

// TestByteExact sends a large stream each way at once through the proxy
// and checks both with a hash.
func TestByteExact(t *testing.T) {
	size := int64(256 << 20)
	if testing.Short() {
		size = 16 << 20
	}
	type result struct {
		sum [32]byte
		n   int64
		err error
	}
	fromClient := make(chan result, 1)
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		wrote := make(chan struct{})
		go func() {
			io.Copy(c, newStream(2, size))
			c.(*net.TCPConn).CloseWrite()
			close(wrote)
		}()
		sum, n, err := digest(c)
		<-wrote
		fromClient <- result{sum, n, err}
	})
	e := testEngine(t, Options{})
	p := testPool(t, e.Loops(), "wrr", backend)
	ln := proxyTo(t, e, p, nil)
	c := dial(t, ln.Addr())
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	go func() {
		io.Copy(c, newStream(1, size))
		c.CloseWrite()
	}()
	sum, n, err := digest(c)
	if err != nil || n != size || sum != want(2, size) {
		t.Fatalf("client received %d bytes (err %v), hash match %v; want %d", n, err, sum == want(2, size), size)
	}
	r := <-fromClient
	if r.err != nil || r.n != size || r.sum != want(1, size) {
		t.Fatalf("backend received %d bytes (err %v), hash match %v; want %d", r.n, r.err, r.sum == want(1, size), size)
	}
	// Splice is real: nearly every byte went socket → pipe → socket in the
	// kernel. Only the first read of each burst may go through the copy
	// buffer.
	spliced, copied := e.TotalSpliced()
	if spliced+copied < uint64(2*size) || spliced < uint64(2*size)*9/10 {
		t.Fatalf("spliced %d and copied %d of %d bytes: bulk did not go through splice", spliced, copied, 2*size)
	}
	t.Logf("spliced %d, copied %d bytes", spliced, copied)
}

// TestSpliceOnly forces every byte through splice (no copy buffer) and
// counts it.
func TestSpliceOnly(t *testing.T) {
	backend := listen(t, "tcp", "127.0.0.1:0", echo)
	e := testEngine(t, Options{CopyBuffer: -1})
	p := testPool(t, e.Loops(), "wrr", backend)
	ln := proxyTo(t, e, p, nil)
	c := dial(t, ln.Addr())
	got, err := roundTrip(c, "hello through splice")
	if err != nil || got != "hello through splice" {
		t.Fatalf("got %q, %v", got, err)
	}
	spliced, copied := e.TotalSpliced()
	if copied != 0 || spliced != 2*uint64(len(got)) {
		t.Fatalf("spliced %d copied %d, want %d spliced and 0 copied", spliced, copied, 2*len(got))
	}
}

func TestHalfCloseClientFirst(t *testing.T) {
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		// Read the whole request up to the client's FIN, then answer.
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		c.Write(append([]byte("got:"), req...))
	})
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := dial(t, ln.Addr())
	c.Write([]byte("request"))
	c.CloseWrite()
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "got:request" {
		t.Fatalf("got %q, %v", resp, err)
	}
}

func TestHalfCloseBackendFirst(t *testing.T) {
	done := make(chan string, 1)
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		c.Write([]byte("banner"))
		c.(*net.TCPConn).CloseWrite()
		// The client keeps talking after our FIN.
		b, _ := io.ReadAll(c)
		done <- string(b)
	})
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := dial(t, ln.Addr())
	b, err := io.ReadAll(c) // ends at the backend's FIN
	if err != nil || string(b) != "banner" {
		t.Fatalf("got %q, %v", b, err)
	}
	for i := 0; i < 3; i++ {
		if _, err := c.Write([]byte("more ")); err != nil {
			t.Fatal(err)
		}
	}
	c.CloseWrite()
	if got := <-done; got != "more more more " {
		t.Fatalf("backend got %q after its half-close", got)
	}
}

func TestResetPropagates(t *testing.T) {
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 4)
		io.ReadFull(c, buf)
		c.(*net.TCPConn).SetLinger(0) // close with RST
	})
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := dial(t, ln.Addr())
	c.Write([]byte("ping"))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client saw %v, want a reset", err)
	}
}

func TestIPv6(t *testing.T) {
	if _, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	backend := listen(t, "tcp6", "[::1]:0", echo)
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), func(c *ListenerConfig) {
		c.Bind = netip.MustParseAddrPort("[::1]:0")
	})
	c := dial(t, ln.Addr())
	if got, err := roundTrip(c, "v6"); err != nil || got != "v6" {
		t.Fatalf("got %q, %v", got, err)
	}
}

// TestManyConnections runs many short request/response connections at
// once through both loops.
func TestManyConnections(t *testing.T) {
	backend := listen(t, "tcp", "127.0.0.1:0", echo)
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	errs := make(chan error, 50)
	for i := 0; i < 50; i++ {
		go func() {
			for j := 0; j < 20; j++ {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				msg := bytes.Repeat([]byte{byte(i)}, 100+j)
				got, err := roundTrip(c, string(msg))
				c.Close()
				if err != nil || got != string(msg) {
					errs <- errors.Join(err, errors.New("echo mismatch"))
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < 50; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	nettest.Eventually(t, "all connections closed", func() bool { return ln.Active() == 0 })
	conns, _ := ln.Totals()
	if conns != 1000 {
		t.Fatalf("listener counted %d connections, want 1000", conns)
	}
}
