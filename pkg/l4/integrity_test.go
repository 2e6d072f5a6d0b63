package l4

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/internal/nettest"
)

// streamBackend writes size bytes of a known pattern to every connection,
// then closes it (a FIN after the last byte).
func streamBackend(t testing.TB, size int) func(net.Conn) {
	return func(c net.Conn) {
		const chunk = 64 << 10
		pat := make([]byte, chunk+251)
		for i := range pat {
			pat[i] = byte(i % 251)
		}
		for sent := 0; sent < size; {
			n := min(size-sent, chunk)
			off := sent % 251 // the pattern goes by offset in the stream
			if _, err := c.Write(pat[off : off+n]); err != nil {
				return
			}
			sent += n
		}
	}
}

// readSlowly reads from c at about rate bytes a second until EOF or an
// error, checking the pattern, and returns how much it read and how it
// ended.
func readSlowly(c net.Conn, rate int) (int, error) {
	buf := make([]byte, rate/20)
	got := 0
	for {
		n, err := io.ReadFull(c, buf)
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		for i := 0; i < n; i++ {
			if buf[i] != byte((got+i)%251) {
				return got + i, errors.New("corrupt byte")
			}
		}
		got += n
		if err != nil {
			return got, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestIdleTimeoutSparesSlowReader: a client reading far slower than its
// backend sends is making progress; idle_timeout never cuts it, and it
// gets every byte and then the FIN.
func TestIdleTimeoutSparesSlowReader(t *testing.T) {
	// lbd writes to the client again only once its send queue (megabytes,
	// autotuned) has drained by a good part, which at this rate takes
	// longer than the timeout: only the queue moving shows the progress.
	const size = 8 << 20
	e := testEngine(t, Options{Loops: 1})
	be := listen(t, "tcp", "127.0.0.1:0", streamBackend(t, size))
	ln := proxyTo(t, e, testPool(t, 1, "wrr", be), func(c *ListenerConfig) { c.IdleTimeout = 200 * time.Millisecond })
	c := dial(t, ln.Addr())
	c.SetReadBuffer(16 << 10)
	got, err := readSlowly(c, 3<<20) // about 3 s
	if got != size || err != io.EOF {
		t.Fatalf("read %d of %d bytes, ended by %v", got, size, err)
	}
}

// TestIdleTimeoutStalledReaderReset: a client that stops reading with
// bytes still on their way is cut at idle_timeout, and both it and the
// backend see a reset, never a FIN that would pass for the end of the
// stream.
func TestIdleTimeoutStalledReaderReset(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	backendErr := make(chan error, 1)
	be := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				backendErr <- err
				return
			}
		}
	})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", be), func(c *ListenerConfig) { c.IdleTimeout = 200 * time.Millisecond })
	c := dial(t, ln.Addr())
	c.SetReadBuffer(16 << 10)
	first := make([]byte, 1000)
	if _, err := io.ReadFull(c, first); err != nil {
		t.Fatal(err)
	}
	// Stall well past the timeout (twice over: the first expiry may still
	// see the kernel queue move), then read what is left.
	time.Sleep(1500 * time.Millisecond)
	_, err := io.Copy(io.Discard, c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("client: stream ended by %v, want a reset", err)
	}
	select {
	case err := <-backendErr:
		if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
			t.Fatalf("backend: %v, want a reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the backend was never told")
	}
}

// TestShutdownResetsCutTransfers: connections still carrying data when the
// shutdown grace period ends are reset, not closed with a FIN that would
// make a cut download look complete; an idle one gets its FIN.
func TestShutdownResetsCutTransfers(t *testing.T) {
	e, err := New(Options{Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	defer e.Close()
	be := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil || buf[0] != 'x' {
			io.Copy(io.Discard, c) // the idle one: waits for its end
			return
		}
		big := make([]byte, 64<<10)
		for {
			if _, err := c.Write(big); err != nil {
				return
			}
		}
	})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", be), nil)
	busy := dial(t, ln.Addr())
	busy.SetReadBuffer(16 << 10)
	busy.Write([]byte("x"))
	if _, err := io.ReadFull(busy, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	idle := dial(t, ln.Addr())
	idle.Write([]byte("i"))
	nettest.Eventually(t, "two connections", func() bool { return e.Active() == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	e.Shutdown(ctx)
	e.Close()
	if _, err := io.Copy(io.Discard, busy); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the cut transfer ended by %v, want a reset", err)
	}
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("the idle connection: %d bytes, %v; want a FIN", n, err)
	}
}

// TestAdminStateAtEveryDial: a backend disabled or drained while a
// connection is still connecting elsewhere is not the one its retry lands
// on: the retry reuses the first attempt's snapshot, but the operator's
// state is read at each dial.
func TestAdminStateAtEveryDial(t *testing.T) {
	for _, state := range []string{"disable", "drain"} {
		t.Run(state, func(t *testing.T) {
			hole := blackhole(t)
			live := listen(t, "tcp", "127.0.0.1:0", echo)
			e := testEngine(t, Options{Loops: 1})
			p := testPool(t, 1, "wrr", hole, live)
			ln := proxyTo(t, e, p, func(c *ListenerConfig) { c.ConnectTimeout = 400 * time.Millisecond; c.Retries = 1 })
			bLive := p.Backend(live.String())
			c := dial(t, ln.Addr())
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.Write([]byte("x"))
			// The first pick of a fresh wrr pool is the first backend, the
			// black hole: the connection waits there until its timeout.
			time.Sleep(100 * time.Millisecond)
			if bLive.Active.Load() != 0 {
				t.Skip("the first pick was the live backend")
			}
			if state == "disable" {
				p.Disable(bLive)
			} else {
				p.Drain(bLive)
			}
			buf := make([]byte, 1)
			n, _ := c.Read(buf)
			if n != 0 || bLive.Stats(0).Connections.Load() != 0 {
				t.Fatalf("after %s, the retry reached the live backend (%d bytes echoed)", state, n)
			}
		})
	}
}

// TestResetDuringBackpressure: a client that resets while its upload waits
// on a backend that does not read is noticed at once, and the backend gets
// the reset, not a connection left open until it reads again.
func TestResetDuringBackpressure(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	backendErr := make(chan error, 1)
	release := make(chan struct{})
	be := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		<-release // reads nothing for now: the upload backs up
		_, err := io.Copy(io.Discard, c)
		backendErr <- err
	})
	free := sync.OnceFunc(func() { close(release) })
	t.Cleanup(free)
	ln := proxyTo(t, e, testPool(t, 1, "wrr", be), nil)
	c := dial(t, ln.Addr())
	// Fill the backend's buffers and lbd's pipe.
	c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			break
		}
	}
	c.SetLinger(0)
	c.Close() // a reset
	nettest.Eventually(t, "the connection to end", func() bool { return e.Active() == 0 })
	free()
	if err := <-backendErr; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the backend's read ended with %v, want a reset", err)
	}
}

// TestListenerCloseServesQueued: connections waiting in a listening
// socket's queue when it closes (a reload removed the listener, or a
// shutdown) are served, not reset.
func TestListenerCloseServesQueued(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", listen(t, "tcp", "127.0.0.1:0", echo)), nil)
	l := e.loops[0]
	dialed, removed := make(chan struct{}), make(chan struct{})
	// The loop is held while the clients connect, so they wait in the
	// queue; then it removes the listener as CloseListener would.
	l.exec(func() {
		<-dialed
		l.removeListener(ln)
		close(removed)
	})
	var clients []net.Conn
	for range 20 {
		clients = append(clients, dial(t, ln.Addr()))
	}
	close(dialed)
	<-removed
	for i, c := range clients {
		if got, err := roundTrip(c, "queued"); err != nil || got != "queued" {
			t.Fatalf("client %d, queued at the close: %q %v", i, got, err)
		}
	}
}

// TestDataBeforeResetDelivered: bytes a backend sent just before it reset
// reach the client ahead of the reset, even when both arrive in one wake.
func TestDataBeforeResetDelivered(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	gotReq, held, sent := make(chan struct{}), make(chan struct{}), make(chan struct{})
	be := listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		c.Read(make([]byte, 1))
		close(gotReq)
		<-held
		c.Write([]byte("response"))
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // a reset right behind the data
		close(sent)
	})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", be), nil)
	c := dial(t, ln.Addr())
	c.Write([]byte("q"))
	<-gotReq
	// The loop is held while the data and the reset arrive, so it sees
	// both in one wake.
	arrived := make(chan error, 1)
	l := e.loops[0]
	l.exec(func() {
		close(held)
		<-sent
		arrived <- awaitTCPState(liveConn(l).fd[sideBackend], tcpClose)
	})
	if err := <-arrived; err != nil {
		t.Fatalf("the backend's reset: %v", err)
	}
	got, err := io.ReadAll(c)
	if string(got) != "response" {
		t.Fatalf("the client got %q (%v), want the response before the reset", got, err)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the response: %v, want the reset", err)
	}
}

// TestDrainedDuringConnectKeepsRetry: a client whose backend was drained
// while its connect was under way goes to another backend, even with no
// retries configured: that attempt never reached anyone.
func TestDrainedDuringConnectKeepsRetry(t *testing.T) {
	a, b := listen(t, "tcp", "127.0.0.1:0", echo), listen(t, "tcp", "127.0.0.1:0", echo)
	e := testEngine(t, Options{Loops: 1})
	p := testPool(t, 1, "wrr", a, b)
	ln := proxyTo(t, e, p, func(c *ListenerConfig) { c.Retries = 0 })
	l := e.loops[0]
	dialed, done := make(chan struct{}), make(chan error, 1)
	l.exec(func() {
		<-dialed
		for _, ll := range l.lns {
			if ll != nil && ll.ln == ln {
				l.accept(ll) // dials the backend
			}
		}
		// The handshake completes while the loop has yet to hear of it.
		err := awaitTCPState(liveConn(l).fd[sideBackend], tcpEstablished)
		for _, bk := range p.Backends() {
			if bk.Active.Load() > 0 {
				p.Drain(bk)
			}
		}
		done <- err
	})
	c := dial(t, ln.Addr())
	close(dialed)
	if err := <-done; err != nil {
		t.Fatalf("the backend's handshake: %v", err)
	}
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello" {
		t.Fatalf("%q %v: the client was given up", got, err)
	}
}

// TCP states, as TCP_INFO reports them.
const (
	tcpEstablished = 1
	tcpClose       = 7
)

// awaitTCPState polls fd's TCP state until it is state, for a test that
// holds its loop and must know what the kernel has done meanwhile. It runs
// on the loop, so it reports failure instead of failing the test.
func awaitTCPState(fd int, state uint8) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return err
		}
		if info.State == state {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("TCP state %d, want %d", info.State, state)
		}
		time.Sleep(time.Millisecond)
	}
}

// liveConn is the loop's one live connection. It runs on the loop.
func liveConn(l *loop) *conn {
	for _, c := range l.conns.items {
		if c.state != stFree {
			return c
		}
	}
	return nil
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
