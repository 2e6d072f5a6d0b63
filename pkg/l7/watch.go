package l7

import (
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The client-side timeouts (header, idle, body, write) are kept by a
// watchdog rather than by connection deadlines. fasthttp would move a
// connection's deadlines three times per request, each move a runtime timer
// update; here a connection records which phase it is in, and since when
// (the monotonic clock), in one atomic word, and a watchdog goroutine per
// Server looks at every connection once per tick and cuts those past their
// phase's timeout by setting a deadline in the past, which fails the read
// or write in progress as a deadline would have.
//
// A timeout thus fires up to a tick late (more only if the watchdog
// goroutine itself is held up), never early. A tick is a sixteenth of the
// shortest timeout, within [minTick, maxTick].
const (
	minTick = 5 * time.Millisecond
	maxTick = 250 * time.Millisecond
)

// The phases of a client connection.
const (
	phNew    = iota // accepted; until its first request is in the handler: header timeout
	phIdle          // waiting for the next request: idle timeout
	phHeader        // reading a request's line and header: header timeout
	phBody          // reading its body: until the deadline HeaderReceived set
	phBusy          // in the handler, or between writes: no bound here (the backend side has its own)
	phWrite         // in a write: write timeout
	phTunnel        // upgraded: the tunnel's own business
	phCut           // cut by the watchdog: closed if still open a write timeout later

	phBits = 4
	phMask = 1<<phBits - 1
)

// watchdog keeps the timeouts of one Server's client connections.
type watchdog struct {
	header, idle, write int64 // ns
	tick                int64 // ns

	mu       sync.Mutex
	conns    map[*serverConn]struct{}
	stopping bool
	start    sync.Once
	stop     chan struct{}
}

func newWatchdog(header, idle, write time.Duration) *watchdog {
	tick := min(header, idle, write) / 16
	tick = max(min(tick, maxTick), minTick)
	w := &watchdog{
		header: int64(header), idle: int64(idle), write: int64(write), tick: int64(tick),
		conns: map[*serverConn]struct{}{},
		stop:  make(chan struct{}),
	}
	return w
}

// run checks the connections every tick until stopped and left with none.
func (w *watchdog) run() {
	t := time.NewTicker(time.Duration(w.tick))
	defer t.Stop()
	stop := w.stop
	for {
		select {
		case <-t.C:
		case <-stop:
			stop = nil
		}
		now := int64(monotonic())
		w.mu.Lock()
		for c := range w.conns {
			w.check(c, now)
		}
		done := stop == nil && len(w.conns) == 0
		w.mu.Unlock()
		if done {
			return
		}
	}
}

// check cuts c if it is past its phase's timeout at now.
func (w *watchdog) check(c *serverConn, now int64) {
	s := c.state.Load()
	at := int64(s >> phBits)
	var over bool
	switch s & phMask {
	case phNew, phHeader:
		over = now-at > w.header
	case phIdle:
		over = now-at > w.idle
	case phWrite:
		over = now-at > w.write
	case phBody:
		over = now > at // a deadline
	case phCut:
		// Whatever held it past its cut (a write that ended just as it
		// was cut, a layer below that reset its deadline): close it.
		if now-at > w.write {
			c.Conn.Close()
		}
		return
	}
	if !over || !c.state.CompareAndSwap(s, uint64(now)<<phBits|phCut) {
		return // in time, or it moved on meanwhile
	}
	if s&phMask == phWrite {
		c.Conn.SetDeadline(cutTime)
	} else {
		// The read fails; the 408 fasthttp then answers may still go out.
		c.Conn.SetReadDeadline(cutTime)
	}
}

// cutTime is a deadline long past.
var cutTime = time.Unix(1, 0)

// serve starts the watchdog once.
func (w *watchdog) serve() { w.start.Do(func() { go w.run() }) }

// shutdown lets the watchdog end once its last connection has closed.
func (w *watchdog) shutdown() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopping {
		w.stopping = true
		close(w.stop)
	}
}

func (w *watchdog) add(c net.Conn) *serverConn {
	sc := &serverConn{Conn: c, w: w}
	sc.state.Store(uint64(monotonic())<<phBits | phNew)
	w.mu.Lock()
	w.conns[sc] = struct{}{}
	w.mu.Unlock()
	return sc
}

func (w *watchdog) remove(c *serverConn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// watchListener hands out accepted connections registered with a watchdog.
type watchListener struct {
	net.Listener
	w *watchdog
}

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := l.w.add(c)
	if tc, ok := c.(*tls.Conn); ok {
		// fasthttp tells TLS connections by these two methods.
		return &tlsServerConn{sc, tc}, nil
	}
	return sc, nil
}

// serverConn is a client connection under a watchdog. fasthttp uses it from
// one goroutine at a time (Close may come from another); an upgraded one is
// read and written at once, in phTunnel.
type serverConn struct {
	net.Conn
	w       *watchdog
	state   atomic.Uint64 // at<<phBits | phase
	realWD  bool          // a write deadline was passed on
	removed atomic.Bool
}

type tlsServerConn struct {
	*serverConn
	tc *tls.Conn
}

func (c *tlsServerConn) Handshake() error                     { return c.tc.Handshake() }
func (c *tlsServerConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// watched returns the serverConn under a connection fasthttp hands out.
func watched(c net.Conn) *serverConn {
	switch v := c.(type) {
	case *serverConn:
		return v
	case *tlsServerConn:
		return v.serverConn
	}
	return nil
}

func (c *serverConn) enter(ph uint64) {
	c.state.Store(uint64(monotonic())<<phBits | ph)
}

// busy marks the request in the handler: its header and body are in. The
// phase has no bound, so it needs no clock.
func (c *serverConn) busy() { c.state.Store(phBusy) }

// tunnel marks the connection upgraded: the watchdog leaves it alone.
func (c *serverConn) tunnel() { c.state.Store(phTunnel) }

func (c *serverConn) Read(p []byte) (int, error) {
	if ph := c.state.Load() & phMask; ph == phBusy || ph == phWrite {
		// The answer is out: this waits for the next request.
		c.enter(phIdle)
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.state.Load()&phMask == phIdle {
		c.enter(phHeader)
	}
	return n, err
}

func (c *serverConn) Write(b []byte) (int, error) {
	s := c.state.Load()
	switch s & phMask {
	case phNew, phTunnel, phCut:
		// A TLS handshake or an early refusal is bounded by the header
		// timeout from the accept; a tunnel is on its own.
		return c.Conn.Write(b)
	}
	w := uint64(monotonic())<<phBits | phWrite
	c.state.Store(w)
	n, err := c.Conn.Write(b)
	next := uint64(phBusy)
	switch s & phMask {
	case phIdle, phHeader, phBody:
		next = s // an interim answer (100 Continue): back to reading
	}
	// Unless the watchdog cut it meanwhile.
	c.state.CompareAndSwap(w, next)
	return n, err
}

// SetReadDeadline is how fasthttp bounds a body (HeaderReceived); it sets no
// other read deadline with the timeouts it is given.
func (c *serverConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	c.state.Store(uint64(t.Sub(clockBase))<<phBits | phBody)
	return nil
}

func (c *serverConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() && !c.realWD {
		return nil
	}
	c.realWD = !t.IsZero()
	return c.Conn.SetWriteDeadline(t)
}

func (c *serverConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *serverConn) Close() error {
	if !c.removed.Swap(true) {
		c.w.remove(c)
	}
	return c.Conn.Close()
}
