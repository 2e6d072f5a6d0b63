package l4

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/healthcheck"
	"github.com/lbd-lb/lbd/internal/nettest"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// testEngine starts an engine with the given loops that the test closes.
func testEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	if opts.Loops == 0 {
		opts.Loops = 2
	}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(e.Close)
	return e
}

func testPool(t testing.TB, loops int, algorithm string, addrs ...netip.AddrPort) *pool.Pool {
	t.Helper()
	spec := pool.Spec{Name: "p", Algorithm: algorithm, Hash: "source_ip", MaglevTableSize: 65537,
		HealthCheck: healthcheck.Config{Type: healthcheck.TypeNone}}
	for _, a := range addrs {
		spec.Backends = append(spec.Backends, pool.BackendSpec{Address: a, Weight: 100})
	}
	p, err := pool.New(spec, pool.Options{Loops: loops}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// listen opens a backend listener on loopback and serves each connection
// with handle in its own goroutine.
func listen(t testing.TB, network, addr string, handle func(net.Conn)) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

func echo(c net.Conn) { io.Copy(c, c) }

// proxyTo starts a tcp listener on 127.0.0.1:0 feeding p.
func proxyTo(t testing.TB, e *Engine, p *pool.Pool, mod func(*ListenerConfig)) *Listener {
	t.Helper()
	cfg := ListenerConfig{
		Name:           "test",
		Bind:           netip.MustParseAddrPort("127.0.0.1:0"),
		Pool:           p,
		ConnectTimeout: 2 * time.Second,
		IdleTimeout:    time.Minute,
		Retries:        2,
	}
	if mod != nil {
		mod(&cfg)
	}
	ln, err := e.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func dial(t testing.TB, to netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", to.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads back as many bytes.
func roundTrip(c net.Conn, msg string) (string, error) {
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return string(buf), err
}

// expectClosed asserts that the proxy closes c without sending data.
func expectClosed(t testing.TB, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := bufio.NewReader(c).ReadByte()
	if err == nil {
		t.Fatalf("read %q, want the connection closed", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("connection still open")
	}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// handClock is a clock for Options.Clock that moves only when the test
// moves it.
type handClock struct{ ns atomic.Int64 }

func (c *handClock) now() time.Duration { return time.Duration(c.ns.Load()) }

// advance moves the clock on by d and waits until every loop of e has run
// its timers at the new time: a loop woken by a command reads the clock,
// runs the command, then fires its timers at the top of its next turn,
// where a second command finds it done.
func (c *handClock) advance(e *Engine, d time.Duration) {
	c.ns.Add(int64(d))
	for range 2 {
		for _, l := range e.loops {
			done := make(chan struct{})
			l.exec(func() { close(done) })
			<-done
		}
	}
}

// acked waits until the peers of every connection of e have acknowledged
// all that lbd sent them. A byte still unacknowledged when idle_timeout
// comes due is a peer taking bytes, which counts as progress; with a clock
// moved by hand minutes pass in no time, so a test waits for the ACKs
// that real minutes would have brought.
func acked(t *testing.T, e *Engine) {
	t.Helper()
	nettest.Eventually(t, "every byte sent acknowledged", func() bool {
		for _, l := range e.loops {
			inFlight := make(chan bool)
			l.exec(func() {
				n := 0
				for _, c := range l.conns.items {
					for _, fd := range c.fd {
						if c.state != stFree && fd >= 0 {
							q, _ := unix.IoctlGetInt(fd, unix.SIOCOUTQ)
							n += q
						}
					}
				}
				inFlight <- n > 0
			})
			if <-inFlight {
				return false
			}
		}
		return true
	})
}
