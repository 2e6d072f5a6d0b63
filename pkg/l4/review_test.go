package l4

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPipeCapacityKnown: the pool learns each pipe's real capacity, so
// copy reads never exceed what a pipe can park.
func TestPipeCapacityKnown(t *testing.T) {
	pp := newPipePool(4096, 4, false)
	p, err := pp.get()
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	got, err := unix.FcntlInt(uintptr(p.r), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if p.cap != got || pp.floor > got {
		t.Fatalf("pool believes the pipe holds %d bytes and reads up to %d, the pipe holds %d", p.cap, pp.floor, got)
	}
}

// TestSmallPipesBackpressure pushes a transfer through pipes far smaller
// than the copy buffer to a reader that is slower than the writer: every
// byte must arrive.
func TestSmallPipesBackpressure(t *testing.T) {
	const size = 8 << 20
	got := make(chan [32]byte, 1)
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 1000)
		var all []byte
		for {
			n, err := c.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		sum, _, _ := digest(bytesReader(all))
		got <- sum
	})
	e := testEngine(t, Options{PipeSize: 4096, CopyBuffer: 4096})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := dial(t, ln.Addr())
	io.Copy(c, newStream(9, size))
	c.CloseWrite()
	if sum := <-got; sum != want(9, size) {
		t.Fatal("bytes lost or changed through small pipes")
	}
}

// TestResetAfterHalfClose: a client that half-closes and then resets makes
// the backend see a reset, not a connection left open.
func TestResetAfterHalfClose(t *testing.T) {
	seen := make(chan error, 1)
	backend := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		io.ReadAll(c) // until the client's FIN
		_, err := c.Read(make([]byte, 1))
		for err == io.EOF {
			// Keep polling: the reset arrives after the FIN.
			time.Sleep(10 * time.Millisecond)
			_, err = c.Write([]byte("x"))
			if err == nil {
				_, err = c.Read(make([]byte, 1))
			}
		}
		seen <- err
	})
	e := testEngine(t, Options{})
	ln := proxyTo(t, e, testPool(t, e.Loops(), "wrr", backend), nil)
	c := dial(t, ln.Addr())
	c.Write([]byte("bye"))
	c.CloseWrite()
	time.Sleep(50 * time.Millisecond) // the FIN reaches the backend first
	c.SetLinger(0)
	c.Close()
	select {
	case err := <-seen:
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("backend saw %v, want a reset", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("backend never saw the client's reset")
	}
}

// TestEngineCallsAfterClose: control calls after Close return instead of
// waiting for loops that are gone.
func TestEngineCallsAfterClose(t *testing.T) {
	e, err := New(Options{Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	p := testPool(t, 2, "wrr", listen(t, "tcp", "127.0.0.1:0", echo))
	ln := proxyTo(t, e, p, nil)
	e.Close()
	done := make(chan struct{})
	go func() {
		e.CloseListener(ln)
		e.CloseBackend(p.Backends()[0])
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("engine call after Close hangs")
	}
}

// TestUDPSamePortTwoAddresses: one client port talking to two addresses
// of a wildcard bind is two flows, each answered from its own address.
func TestUDPSamePortTwoAddresses(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	ln := udpProxy(t, e, testPool(t, 1, "wrr", udpBackend(t, "")), func(c *ListenerConfig) {
		c.Bind = netip.MustParseAddrPort("0.0.0.0:0")
	})
	c := udpClient(t)
	for i := 0; i < 2; i++ {
		for _, target := range []string{"127.0.0.1", "127.0.0.2"} {
			to := netip.AddrPortFrom(netip.MustParseAddr(target), ln.Addr().Port())
			got, from, err := exchange(t, c, to, []byte(target))
			if err != nil || string(got) != target || from != to {
				t.Fatalf("to %v: %q from %v, %v", to, got, from, err)
			}
		}
	}
	if ln.Active() != 2 {
		t.Fatalf("%d flows, want 2", ln.Active())
	}
}
