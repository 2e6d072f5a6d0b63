package l4

import (
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/internal/netset"
	"github.com/lbd-lb/lbd/pkg/pool"
)

const (
	sideClient  = 0
	sideBackend = 1
)

// Connection states.
const (
	stFree       uint8 = iota
	stHeader           // reading the inbound PROXY header
	stConnecting       // waiting for the backend's connect to finish
	stForwarding
)

// half is one direction of a connection.
//
// Invariant: n is the number of bytes in p; p is held only while n > 0,
// or within one pump call. An idle connection therefore holds no pipe.
type half struct {
	p    pipe
	held bool
	n    int
	eof  bool // the source sent FIN (or the pipe drained after it)
	shut bool // FIN passed on to the destination
	bulk bool // splice rather than copy
}

// conn is one client connection and its backend connection. It is owned by
// one loop; its slot is reused after it closes, with gen incremented.
type conn struct {
	slot   int32
	gen    uint32
	state  uint8
	queued bool
	rd, wr [2]bool // readiness seen from epoll, cleared on EAGAIN
	// hup records that epoll reported the peer's FIN (or a hang-up) on a
	// side: from then on that side is read until EOF, never assumed
	// drained after a short read.
	hup       [2]bool
	fd        [2]int
	up, down  half // client→backend, backend→client
	timerTick int64
	deadline  int64 // header or connect deadline
	// lastSeen is the last time the connection made progress, for
	// idle_timeout: a byte read from either side, a byte written or
	// spliced to either side, or, seen when the timeout comes due, a
	// peer's unsent queue that changed (outq).
	lastSeen int64
	outq     [2]int // each side's unsent queue when idle_timeout last came due

	ln      *Listener
	cfg     *ListenerConfig
	snap    *pool.Snapshot  // while connecting, for retries
	picker  balancer.Picker // the loop's picker for snap
	backend *pool.Backend
	tried   balancer.Tried
	tries   int

	client netip.AddrPort // the real client: the peer, or the PROXY header's source
	local  netip.AddrPort // the address the client reached; from the header when there is one
	header []byte         // outbound PROXY header still to send
	// viaHeader is set when client and local came from an inbound PROXY
	// header.
	viaHeader bool
}

// due is c's next deadline, 0 for none.
func (c *conn) due() int64 {
	switch c.state {
	case stHeader, stConnecting:
		return c.deadline
	case stForwarding:
		if c.cfg.IdleTimeout > 0 {
			return c.lastSeen + int64(c.cfg.IdleTimeout)
		}
	}
	return 0
}

func (l *loop) newConn(ln *Listener, fd int, peer netip.AddrPort) {
	cfg := ln.cfg.Load()
	st := &ln.stats[l.id]
	// Increment first: loops accept concurrently, and a check followed by
	// an increment could overshoot the limit.
	if n := ln.active.Add(1); cfg.MaxConnections > 0 && n > int64(cfg.MaxConnections) {
		ln.active.Add(-1)
		st.Rejected[RejectMaxConnections].Add(1)
		rawResetClose(fd)
		return
	}
	st.Connections.Add(1)
	l.activeConn++
	l.activeCount.Store(l.activeConn)

	c := l.allocConn()
	c.gen = (c.gen + 1) & genMask
	c.state = stConnecting
	c.fd = [2]int{fd, -1}
	c.rd = [2]bool{true, false}
	c.wr = [2]bool{true, false}
	c.hup = [2]bool{}
	c.outq = [2]int{}
	c.up, c.down = half{}, half{}
	c.timerTick = -1
	c.ln, c.cfg = ln, cfg
	c.client = peer
	c.local = netip.AddrPort{}
	c.viaHeader = false
	c.tried.Reset()
	c.tries = 0
	c.header = nil
	if err := l.register(c, fd, tagClient); err != nil {
		l.log.Debug("epoll_ctl client", "err", err)
		l.closeConn(c, true)
		return
	}
	if cfg.AcceptProxy {
		if !netset.Set(cfg.TrustedProxies).Contains(peer.Addr()) {
			l.reject(c, RejectProxyHeader)
			return
		}
		c.state = stHeader
		c.deadline = l.now + int64(cfg.ProxyHeaderTimeout)
		l.arm(c)
		l.readHeader(c, false)
		return
	}
	l.connect(c)
}

// reject closes a connection that was never forwarded.
func (l *loop) reject(c *conn, reason int) {
	c.ln.stats[l.id].Rejected[reason].Add(1)
	l.closeConn(c, false)
}

// handle reacts to readiness on one side of c.
func (l *loop) handle(c *conn, side int, events uint32) {
	switch c.state {
	case stHeader:
		if side == sideClient {
			l.readHeader(c, events&(unix.EPOLLRDHUP|unix.EPOLLHUP) != 0)
		}
	case stConnecting:
		if side != sideBackend || events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
			return
		}
		// A refused or failed connect raises EPOLLERR or EPOLLHUP; plain
		// EPOLLOUT means connected, so SO_ERROR is read only on error.
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			err := rawSoError(c.fd[sideBackend])
			if err == nil {
				err = unix.ECONNRESET
			}
			l.connectFailed(c, err)
			return
		}
		l.connected(c)
	case stForwarding:
		if events&unix.EPOLLERR != 0 && (c.up.shut || c.down.shut) {
			// A reset on a half-closed side: nothing may be left to
			// read or write there to notice it, so check, and pass
			// the reset on.
			if err := rawSoError(c.fd[side]); err != nil {
				l.closeConn(c, true)
				return
			}
		}
		l.service(c)
		if events&unix.EPOLLERR != 0 && c.state == stForwarding {
			// The bytes the peer sent before its reset have gone on
			// (service reads them first, then meets the error). A side
			// lbd is not reading because the other is full
			// (backpressure) would hide the reset for as long as that
			// lasts: check it now, and pass the reset on.
			if err := rawSoError(c.fd[side]); err != nil {
				l.closeConn(c, true)
				return
			}
		}
	}
}

// expire handles a deadline that passed.
func (l *loop) expire(c *conn) {
	switch c.state {
	case stHeader:
		l.reject(c, RejectProxyHeader)
	case stConnecting:
		l.connectFailed(c, unix.ETIMEDOUT)
	case stForwarding:
		if l.peersDraining(c) {
			// A peer is still taking bytes lbd already handed to the
			// kernel: a slow reader, not an idle connection.
			c.lastSeen = l.now
			l.arm(c)
			return
		}
		l.log.Debug("idle timeout", "listener", c.cfg.Name)
		// With bytes still undelivered (a peer stopped reading), closeConn
		// resets both sides.
		l.closeConn(c, false)
	}
}

// peersDraining reports whether either peer's unsent queue (bytes written
// to the socket that the peer has not acknowledged yet) holds bytes and has
// changed since idle_timeout last came due, and notes the queues. A peer
// that reads slowly keeps its queue moving without lbd writing, since lbd
// writes again only once a good part of the queue has gone.
func (l *loop) peersDraining(c *conn) bool {
	moved := false
	for s, fd := range c.fd {
		q := 0
		if fd >= 0 {
			if n, err := unix.IoctlGetInt(fd, unix.SIOCOUTQ); err == nil {
				q = n
			}
		}
		if q > 0 && q != c.outq[s] {
			moved = true
		}
		c.outq[s] = q
	}
	return moved
}

// undelivered reports whether c holds bytes one side sent that the other
// has not been given: in a pipe, or still unread in a socket's receive
// queue. Closing such a connection with a FIN would tell a peer that the
// stream ended normally when it was cut.
func (l *loop) undelivered(c *conn) bool {
	if c.up.n > 0 || c.down.n > 0 {
		return true
	}
	for _, fd := range c.fd {
		if fd < 0 {
			continue
		}
		if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
			return true
		}
	}
	return false
}

// closeConn ends c. With reset, both sides see a reset rather than a FIN:
// one side failed, and the other must not mistake that for a clean end.
//
// Invariant: a FIN to a peer means that every byte the other side sent has
// been delivered to it. So when c still holds undelivered bytes (see
// undelivered), it is reset whatever the caller asked: an idle timeout
// with a peer that stopped reading, a shutdown_timeout that cuts a
// transfer, a PROXY header refused with data behind it.
func (l *loop) closeConn(c *conn, reset bool) {
	if c.state == stFree {
		return
	}
	if !reset && !(c.up.shut && c.down.shut) && l.undelivered(c) {
		reset = true
	}
	for s := range c.fd {
		if fd := c.fd[s]; fd >= 0 {
			if reset {
				rawResetClose(fd)
			} else {
				rawClose(fd)
			}
			c.fd[s] = -1
		}
	}
	for _, h := range []*half{&c.up, &c.down} {
		if h.held {
			if h.n == 0 {
				l.pipes.put(h.p)
			} else {
				// Never pool a pipe that still holds bytes.
				h.p.close()
			}
			h.held = false
			h.n = 0
		}
	}
	if c.backend != nil {
		c.backend.Active.Add(-1)
		c.backend = nil
	}
	c.ln.active.Add(-1)
	l.activeConn--
	l.activeCount.Store(l.activeConn)
	c.state = stFree
	c.queued = false
	c.snap, c.picker = nil, nil
	c.ln, c.cfg = nil, nil
	c.header = nil
	c.gen = (c.gen + 1) & genMask
	l.conns.release(c.slot, func(c *conn) bool { return c.state == stFree }, func(c *conn) uint32 { return c.gen })
}

// closeBackendConns resets every connection of this loop to backend b.
func (l *loop) closeBackendConns(b *pool.Backend) {
	for _, c := range l.conns.items {
		if c.state != stFree && c.backend == b {
			l.closeConn(c, true)
		}
	}
}
