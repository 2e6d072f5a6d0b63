package l7

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// The timeouts of an http listener's connections, the clients' (header,
// idle, body, write) and the backends' (read, write), are kept by a
// watchdog rather than by connection deadlines. fasthttp would move a
// client connection's deadlines three times per request and a backend
// connection's twice, each move a clock read and a runtime timer update.
// Here a connection records which phase it is in, and since when, in one
// atomic word, and a watchdog goroutine per Server looks at every
// connection once per tick and cuts those past their phase's timeout by
// setting a deadline in the past, which fails the read or write in progress
// as a deadline would have.
//
// A connection that enters a phase records it without a time, and the
// watchdog writes in its own clock when it first sees the phase: the owner
// reads no clock, and the start recorded is never earlier than the true
// one. A timeout thus fires up to two ticks late (more only if the watchdog
// goroutine itself is held up), never early. A tick is a sixteenth of the
// shortest timeout, within [minTick, maxTick].
const (
	minTick = 5 * time.Millisecond
	maxTick = 250 * time.Millisecond
)

// The phases of a connection.
const (
	phNew    = iota // client: accepted; until its first request is in the handler: header timeout
	phIdle          // client: waiting for the next request: idle timeout
	phHeader        // client: reading a request's line and header: header timeout
	phBody          // client: reading its body: until the deadline HeaderReceived set
	phBusy          // in the handler, or between a backend connection's reads and writes: no bound
	phWrite         // in a write that may block: write timeout
	phTunnel        // client: upgraded; entered again on every byte either way: tunnel timeout
	phCut           // cut by the watchdog: closed if still open a write timeout later
	phRead          // backend: waiting for its answer's next bytes: read timeout

	phBits = 4
	phMask = 1<<phBits - 1
)

// timed is what the watchdog knows of a connection.
type timed struct {
	// state is at<<phBits | phase, with at the phase's start on the
	// monotonic clock (for phBody its deadline), 0 until the watchdog has
	// seen it.
	state   atomic.Uint64
	conn    net.Conn // cut and closed through this
	client  bool     // a client connection, not a backend one
	removed atomic.Bool
}

// enter records phase ph, its start to be filled in by the watchdog.
func (t *timed) enter(ph uint64) { t.state.Store(ph) }

// leave moves t from phase ph to next, unless it is in another phase (the
// watchdog cut it); it reports whether it did.
func (t *timed) leave(ph, next uint64) bool {
	for {
		s := t.state.Load()
		if s&phMask != ph {
			return false
		}
		if t.state.CompareAndSwap(s, next) {
			return true
		}
	}
}

// watchdog keeps the timeouts of one Server's connections.
type watchdog struct {
	header, idle, write, read, tunnel int64 // ns
	tick                              int64 // ns

	mu    sync.Mutex
	conns map[*timed]struct{}
	// lingering counts the connections closing in lingerClose, and
	// lingerers holds them (under mu), for waitClients and closeAll.
	lingering atomic.Int64
	lingerers map[net.Conn]struct{}
	stopping  bool
	start     sync.Once
	stop      chan struct{}
}

func newWatchdog(header, idle, write, read, tunnel time.Duration) *watchdog {
	tick := min(header, idle, write, read, tunnel) / 16
	tick = max(min(tick, maxTick), minTick)
	w := &watchdog{
		header: int64(header), idle: int64(idle), write: int64(write), read: int64(read), tunnel: int64(tunnel),
		tick:      int64(tick),
		conns:     map[*timed]struct{}{},
		lingerers: map[net.Conn]struct{}{},
		stop:      make(chan struct{}),
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
		noteNow(int64(monotonic()))
		var stuck []net.Conn
		w.mu.Lock()
		for c := range w.conns {
			// The clock is read for each connection: a start filled in
			// from a reading taken before the connection entered its
			// phase would be early.
			if w.check(c, int64(monotonic())) {
				stuck = append(stuck, c.conn)
			}
		}
		done := stop == nil && len(w.conns) == 0
		w.mu.Unlock()
		// Not under w.mu, since a backendConn's Close forgets itself, and
		// not here, since a TLS connection's Close may wait to send its
		// close_notify.
		for _, c := range stuck {
			go c.Close()
		}
		if done {
			return
		}
	}
}

// check cuts c if it is past its phase's timeout at now, and fills in the
// start of a phase it sees for the first time. It reports a connection
// still open a write timeout after its cut, for the caller to close.
func (w *watchdog) check(c *timed, now int64) (stuck bool) {
	s := c.state.Load()
	ph, at := s&phMask, int64(s>>phBits)
	var limit int64
	switch ph {
	case phNew, phHeader:
		limit = w.header
	case phIdle:
		limit = w.idle
	case phWrite:
		limit = w.write
	case phRead:
		limit = w.read
	case phTunnel:
		limit = w.tunnel
	case phBody:
		if now > at { // a deadline
			w.cut(c, s, now)
		}
		return false
	case phCut:
		// Whatever held it past its cut (a write that ended just as it
		// was cut, a layer below that reset its deadline): close it.
		return now-at > w.write
	default:
		return false
	}
	if at == 0 {
		c.state.CompareAndSwap(s, uint64(now)<<phBits|ph)
		return false
	}
	return now-at > limit && w.cut(c, s, now)
}

// cut fails c's read, or for a write both ways, unless c moved on from s.
// A tunnel it leaves to the caller to close, both sides at once.
func (w *watchdog) cut(c *timed, s uint64, now int64) (closeIt bool) {
	if !c.state.CompareAndSwap(s, uint64(now)<<phBits|phCut) {
		return false
	}
	switch s & phMask {
	case phWrite:
		c.conn.SetDeadline(cutTime)
	case phTunnel:
		return true // tunnelEnds: both sides
	default:
		// The read fails; a 408 fasthttp then answers may still go out
		// (TestFasthttpErrorHandler).
		c.conn.SetReadDeadline(cutTime)
	}
	return false
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

// watch puts t, whose conn is set, under the watchdog in phase ph.
func (w *watchdog) watch(t *timed, ph uint64) {
	t.enter(ph)
	w.mu.Lock()
	w.conns[t] = struct{}{}
	w.mu.Unlock()
}

// forget takes t off the watchdog, once.
func (w *watchdog) forget(t *timed) {
	if t.removed.Swap(true) {
		return
	}
	w.mu.Lock()
	delete(w.conns, t)
	w.mu.Unlock()
}

// approxNow is monotonic() as last noted by a request or a watchdog tick,
// to within a millisecond under load: a clock for heuristics that need no
// clock read of their own.
var approxNow atomic.Int64

// noteNow advances approxNow to now, writing the shared word at most once
// a millisecond.
func noteNow(now int64) {
	for {
		old := approxNow.Load()
		if now-old <= int64(time.Millisecond) || approxNow.CompareAndSwap(old, now) {
			return
		}
	}
}

// waitClients waits until no client connection is left, or ctx ends.
func (w *watchdog) waitClients(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		w.mu.Lock()
		n := 0
		for c := range w.conns {
			if c.client {
				n++
			}
		}
		// A lingering connection ends within lingerTime.
		n += len(w.lingerers)
		w.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// closeAll closes every connection still under the watchdog: what is left
// when a Shutdown's time is up.
func (w *watchdog) closeAll() {
	w.mu.Lock()
	left := make([]net.Conn, 0, len(w.conns)+len(w.lingerers))
	for c := range w.conns {
		left = append(left, c.conn)
	}
	for c := range w.lingerers {
		left = append(left, c) // its lingerClose returns at once
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range left {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Close()
		}()
	}
	wg.Wait()
}

// watchListener hands out accepted connections under a watchdog.
type watchListener struct {
	net.Listener
	w *watchdog
}

func (l watchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := &serverConn{Conn: c, w: l.w}
	sc.timed.conn, sc.timed.client = c, true
	l.w.watch(&sc.timed, phNew)
	if tc, ok := c.(*tls.Conn); ok {
		// fasthttp tells TLS connections by these two methods
		// (TestFasthttpIsTLSByMethods).
		return &tlsServerConn{sc, tc}, nil
	}
	return sc, nil
}

// serverConn is a client connection under a watchdog. fasthttp uses it from
// one goroutine at a time (Close may come from another); an upgraded one is
// read and written at once, in phTunnel.
type serverConn struct {
	net.Conn
	timed
	w      *watchdog
	realWD bool // a write deadline was passed on
	// pending is the request whose chain ran in Server.expect, for
	// serveHTTP to forward once its body comes.
	pending *exchange
	// linger makes Close linger: the client may still be sending a
	// request body that was answered without being read.
	linger bool
}

// Lingering bounds: how long a closing connection keeps reading what the
// client still sends, and how much of it, before it closes for good.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 64 << 20
)

// maxLingering bounds the connections of a Server that linger at once: they
// no longer count against max_connections, so without a bound a client could
// hold descriptors by the thousand with refused uploads. Past it a
// connection closes at once. A variable for tests.
var maxLingering int64 = 1024

type tlsServerConn struct {
	*serverConn
	tc *tls.Conn
}

func (c *tlsServerConn) Handshake() error                     { return c.tc.Handshake() }
func (c *tlsServerConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// clientConn returns the serverConn under a connection fasthttp hands out.
func clientConn(c net.Conn) *serverConn {
	switch v := c.(type) {
	case *serverConn:
		return v
	case *tlsServerConn:
		return v.serverConn
	}
	return nil
}

// busy marks the request in the handler: its header and body are in.
func (c *serverConn) busy() { c.enter(phBusy) }

// tunnel marks the connection upgraded and tunnelled to backend: from here
// on it is bounded only by the tunnel timeout, which every byte either way
// starts again, and a cut or closeAll closes both sides.
func (c *serverConn) tunnel(backend net.Conn) {
	c.w.mu.Lock()
	c.timed.conn = tunnelEnds{c.Conn, backend}
	c.w.mu.Unlock()
	c.enter(phTunnel)
}

// tunnelEnds is the client side of a tunnel, closed with its backend side.
type tunnelEnds struct {
	net.Conn
	backend net.Conn
}

func (t tunnelEnds) Close() error {
	t.backend.Close()
	return t.Conn.Close()
}

func (c *serverConn) Read(p []byte) (int, error) {
	if ph := c.state.Load() & phMask; ph == phBusy || ph == phWrite {
		// The answer is out: this waits for the next request.
		c.enter(phIdle)
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		switch s := c.state.Load(); s & phMask {
		case phIdle:
			c.enter(phHeader)
		case phTunnel:
			c.tunnelActive(s)
		}
	}
	return n, err
}

// tunnelActive starts a tunnel's timeout again on bytes either way: only
// once the watchdog has started its clock (state s carries a time), so
// that a busy tunnel stores nothing per read or write.
func (c *serverConn) tunnelActive(s uint64) {
	if s != phTunnel {
		c.enter(phTunnel)
	}
}

func (c *serverConn) Write(b []byte) (int, error) {
	s := c.state.Load()
	switch s & phMask {
	case phNew, phCut:
		// A TLS handshake or an early refusal is bounded by the header
		// timeout from the accept.
		return c.Conn.Write(b)
	case phTunnel:
		// Written to by one copy of the tunnel while the other reads.
		n, err := c.Conn.Write(b)
		if n > 0 {
			c.tunnelActive(c.state.Load())
		}
		return n, err
	}
	c.enter(phWrite)
	n, err := c.Conn.Write(b)
	next := uint64(phBusy)
	switch s & phMask {
	case phIdle, phHeader, phBody:
		next = s // an interim answer (100 Continue): back to reading
	}
	c.leave(phWrite, next)
	return n, err
}

// SetReadDeadline is how fasthttp bounds a body (HeaderReceived); it sets no
// other read deadline with the timeouts it is given
// (TestFasthttpHeaderReceivedDeadline).
func (c *serverConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	c.state.Store(uint64(max(t.Sub(clockBase), 1))<<phBits | phBody)
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
	c.w.forget(&c.timed)
	if c.linger {
		c.linger = false
		if n := c.w.lingering.Add(1); n <= maxLingering {
			if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
				// The answer is out, with a FIN after it; reading on lets
				// the client see it before the close resets the
				// connection.
				c.w.mu.Lock()
				c.w.lingerers[c.Conn] = struct{}{}
				c.w.mu.Unlock()
				go func() {
					lingerClose(c.Conn)
					c.w.mu.Lock()
					delete(c.w.lingerers, c.Conn)
					c.w.mu.Unlock()
					c.w.lingering.Add(-1)
				}()
				return nil
			}
		}
		c.w.lingering.Add(-1)
	}
	return c.Conn.Close()
}

// lingerClose reads and drops what c still receives, for at most
// lingerTime and lingerBytes, then closes it.
func lingerClose(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(lingerTime))
	buf := smallBodies.Get().(*[streamThreshold + 1]byte)
	defer smallBodies.Put(buf)
	for n := 0; n < lingerBytes; {
		m, err := c.Read(buf[:])
		n += m
		if err != nil {
			break
		}
	}
	c.Close()
}
