package l7

import (
	"context"
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
	// maxLingering bounds lingering (see the constant of that name).
	maxLingering atomic.Int64
	lingerers    map[net.Conn]struct{}
	stopping     bool
	start        sync.Once
	stop         chan struct{}
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
	w.maxLingering.Store(maxLingering)
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
