package l4

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/balancer"
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
		if !trusted(cfg.TrustedProxies, peer.Addr()) {
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

func trusted(nets []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// picker returns the loop's picker for snap, a snapshot of ln's pool: the
// one it keeps for ln, made anew when the pool has published another
// snapshot since. Every loop picks with pickers of its own, so that no two
// cores share a lock or a written cache line, and a pick allocates nothing.
func (l *loop) picker(ln *Listener, snap *pool.Snapshot) balancer.Picker {
	lp := &ln.pickers[l.id]
	if lp.snap != snap {
		lp.snap, lp.picker = snap, snap.Balancer.NewPicker()
	}
	return lp.picker
}

// connect picks a backend not yet tried and starts a non-blocking connect
// to it. When every allowed attempt has failed, the client is closed and
// counted as no_backend.
func (l *loop) connect(c *conn) {
	if c.snap == nil {
		c.snap = c.cfg.Pool.Snapshot()
		// A retry keeps the picker of its snapshot, even once the loop
		// has moved on to a newer one.
		c.picker = l.picker(c.ln, c.snap)
	}
	snap := c.snap
	key := balancer.HashKey(c.client.Addr(), c.client.Port(), snap.HashPort)
	for c.tries <= c.cfg.Retries && c.tried.Len() < balancer.MaxTried {
		idx := c.picker.Pick(key, &c.tried)
		if idx < 0 {
			break
		}
		c.tried.Add(idx)
		b := snap.Backends[idx]
		if b.Admin() != pool.Active {
			// Drained or disabled since the snapshot was taken (a retry
			// reuses the first attempt's): the operator's word holds at
			// every dial. It does not use up a retry.
			continue
		}
		if m := b.MaxConn.Load(); m > 0 && b.Active.Load() >= m {
			// A full backend is skipped; it does not use up a retry.
			continue
		}
		c.tries++
		fd, err := l.dial(b.Addr)
		if err != nil {
			if outOfDescriptors(err) {
				// Not the backend's fault: this process is out of
				// descriptors. Stop accepting for a moment and give
				// this client up rather than blame the backend.
				l.log.Debug("no descriptor for backend socket", "err", err)
				l.pauseAccepting(err)
				break
			}
			if localConnectError(err) {
				// Out of local ports towards this backend: try
				// another, without counting it against this one.
				l.log.Debug("no local port for backend", "backend", b.Name, "err", err)
				continue
			}
			l.log.Debug("connect failed", "backend", b.Name, "err", err)
			b.Stats(l.id).ConnectErrors.Add(1)
			c.cfg.Pool.ConnectFailed(b)
			continue
		}
		b.Active.Add(1)
		c.backend = b
		c.fd[sideBackend] = fd
		c.rd[sideBackend], c.wr[sideBackend], c.hup[sideBackend] = false, false, false
		if err := l.register(c, fd, tagBackend); err != nil {
			l.log.Debug("epoll_ctl backend", "err", err)
			l.closeConn(c, true)
			return
		}
		c.state = stConnecting
		c.deadline = l.now + int64(c.cfg.ConnectTimeout)
		l.arm(c)
		return
	}
	l.reject(c, RejectNoBackend)
}

// dial opens a non-blocking socket and starts connecting it.
func (l *loop) dial(to netip.AddrPort) (int, error) {
	sa := sockaddrFrom(to)
	fd, err := rawSocket(sa.family())
	if err != nil {
		return -1, err
	}
	rawSetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := rawConnect(fd, &sa); err != nil && err != unix.EINPROGRESS {
		rawClose(fd)
		return -1, err
	}
	return fd, nil
}

// connectFailed gives up on the current backend and tries the next.
func (l *loop) connectFailed(c *conn, err error) {
	b := c.backend
	l.log.Debug("connect failed", "backend", b.Name, "err", err)
	b.Stats(l.id).ConnectErrors.Add(1)
	c.cfg.Pool.ConnectFailed(b)
	b.Active.Add(-1)
	c.backend = nil
	rawClose(c.fd[sideBackend])
	c.fd[sideBackend] = -1
	l.connect(c)
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

// localConnectError reports connect errors that are this host's, not the
// backend's: no local port or address is free.
func localConnectError(err error) bool {
	return err == unix.EADDRNOTAVAIL || err == unix.EAGAIN
}

func (l *loop) connected(c *conn) {
	b := c.backend
	if b.Admin() != pool.Active {
		// Drained or disabled while the connect was under way: no byte
		// has gone to it yet, so the client goes to another backend,
		// and this attempt does not count against its retries.
		c.tries--
		b.Active.Add(-1)
		c.backend = nil
		rawResetClose(c.fd[sideBackend])
		c.fd[sideBackend] = -1
		l.connect(c)
		return
	}
	b.Stats(l.id).Connections.Add(1)
	// The connect started ConnectTimeout before its deadline.
	c.cfg.Pool.ObserveConnect(l.id, time.Duration(l.now-c.deadline)+c.cfg.ConnectTimeout)
	c.cfg.Pool.ConnectSucceeded(b)
	c.snap, c.picker = nil, nil
	c.state = stForwarding
	c.lastSeen = l.now
	c.rd[sideBackend], c.wr[sideBackend] = true, true
	if c.cfg.ProxyProtocol != ProxyNone {
		if !l.sendProxyHeader(c) {
			return
		}
	}
	l.arm(c)
	l.service(c)
}

// sendProxyHeader writes the outbound PROXY header before any client byte.
// The socket is freshly connected, so its send buffer has room; should a
// write still come up short, the rest is parked in the upstream pipe,
// which is drained before any client byte is read.
func (l *loop) sendProxyHeader(c *conn) bool {
	if !c.viaHeader {
		var sa sockaddr
		if err := rawGetsockname(c.fd[sideClient], &sa); err == nil {
			c.local = sa.addrPort()
		}
	}
	hdr, err := formatProxyHeader(c.cfg.ProxyProtocol, c.client, c.local)
	if err != nil {
		l.log.Debug("proxy header", "err", err)
		l.closeConn(c, true)
		return false
	}
	n, err := rawWrite(c.fd[sideBackend], hdr)
	if err == unix.EAGAIN {
		n, err = 0, nil
	}
	if err != nil {
		l.closeConn(c, true)
		return false
	}
	if n < len(hdr) {
		if !l.park(c, &c.up, hdr[n:]) {
			l.closeConn(c, true)
			return false
		}
	}
	return true
}

// park puts bytes that the destination would not take into h's pipe. The
// pipe is empty when this is called, and b is no longer than the pool's
// floor, the least capacity a pipe can have, so the write takes
// everything.
func (l *loop) park(c *conn, h *half, b []byte) bool {
	if !h.held {
		p, err := l.getPipe()
		if err != nil {
			return false
		}
		h.p, h.held = p, true
	}
	n, err := rawWrite(h.p.w, b)
	if n > 0 {
		// Count what went in even on failure, so that the pipe is
		// closed rather than pooled with stale bytes.
		h.n += n
	}
	return err == nil && n == len(b)
}

func (l *loop) getPipe() (pipe, error) {
	created := l.pipes.created
	p, err := l.pipes.get()
	if l.pipes.created != created {
		l.stats.PipesCreated.Add(1)
	}
	return p, err
}

// service forwards in both directions as far as readiness allows.
func (l *loop) service(c *conn) {
	more := false
	if !c.up.shut {
		r := l.pump(c, &c.up, &c.down, sideClient, sideBackend)
		if r == pumpFailed {
			l.closeConn(c, true)
			return
		}
		more = r == pumpMore
	}
	if !c.down.shut {
		r := l.pump(c, &c.down, &c.up, sideBackend, sideClient)
		if r == pumpFailed {
			l.closeConn(c, true)
			return
		}
		more = more || r == pumpMore
	}
	if c.up.shut && c.down.shut {
		l.closeConn(c, false)
		return
	}
	if more && !c.queued {
		c.queued = true
		l.pending = append(l.pending, c.slot)
	}
}

const (
	pumpIdle   = iota // waiting for readiness
	pumpMore          // budget used up with work left
	pumpFailed        // a side failed or reset: abort the connection
)

// pump moves bytes of one direction from src to dst until the source has
// nothing more, the destination is full (backpressure: the bytes stay in
// the pipe and the source is not read until they drain), the budget is
// used up, or the source's FIN has been passed on.
func (l *loop) pump(c *conn, h, other *half, src, dst int) int {
	moved := 0
	sfd, dfd := c.fd[src], c.fd[dst]
	toBackend := dst == sideBackend
	for {
		if h.n > 0 {
			if !c.wr[dst] {
				return pumpIdle
			}
			n, err := rawSplice(h.p.r, dfd, h.n)
			if err != nil {
				if err == unix.EAGAIN {
					c.wr[dst] = false
					return pumpIdle
				}
				return pumpFailed
			}
			h.n -= n
			c.lastSeen = l.now // delivery is progress: a slow reader is never idle
			l.account(c, toBackend, n)
			if h.n > 0 {
				continue
			}
		}
		// The pipe is empty here.
		if h.held && !h.bulk {
			l.pipes.put(h.p)
			h.held = false
		}
		if h.eof {
			if h.held {
				l.pipes.put(h.p)
				h.held = false
			}
			// When the other direction has ended too, the connection is
			// closed next, and close(2) sends the FIN: both receive
			// queues were read to EOF, so it cannot turn into a reset.
			if !other.shut {
				if err := rawShutdown(dfd, unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
					return pumpFailed
				}
			}
			h.shut = true
			return pumpIdle
		}
		if !c.rd[src] {
			if h.held {
				l.pipes.put(h.p)
				h.held = false
			}
			return pumpIdle
		}
		if moved >= pumpBudget {
			return pumpMore
		}
		if h.bulk || l.buf == nil {
			if !h.held {
				p, err := l.getPipe()
				if err != nil {
					if l.buf == nil {
						return pumpFailed
					}
					// Out of descriptors: copy through the buffer
					// instead of failing the connection.
					h.bulk = false
					continue
				}
				h.p, h.held = p, true
			}
			n, err := rawSplice(sfd, h.p.w, l.e.opts.PipeSize)
			if err != nil {
				if err == unix.EAGAIN {
					c.rd[src] = false
					continue
				}
				return pumpFailed
			}
			if n == 0 {
				h.eof = true
				continue
			}
			h.n += n
			moved += n
			c.lastSeen = l.now
			l.stats.SplicedBytes.Add(uint64(n))
			if n < len(l.buf)/4 {
				// The stream has gone quiet; small reads are
				// cheaper copied.
				h.bulk = false
			}
			continue
		}
		// Never read more than a pipe can take: a partial write parks
		// the rest in one.
		n, err := rawRead(sfd, l.buf[:min(len(l.buf), l.pipes.floor)])
		if err != nil {
			if err == unix.EAGAIN {
				c.rd[src] = false
				continue
			}
			return pumpFailed
		}
		if n == 0 {
			h.eof = true
			continue
		}
		moved += n
		c.lastSeen = l.now
		l.stats.CopiedBytes.Add(uint64(n))
		if n == min(len(l.buf), l.pipes.floor) {
			h.bulk = true
		} else if !c.hup[src] {
			// A short read from a stream socket emptied its receive
			// queue, so the next read would only say EAGAIN. More
			// data, or a FIN, raises a new edge.
			c.rd[src] = false
		}
		w := 0
		if c.wr[dst] {
			w, err = rawWrite(dfd, l.buf[:n])
			if err != nil {
				if err != unix.EAGAIN {
					return pumpFailed
				}
				w = 0
				c.wr[dst] = false
			}
			l.account(c, toBackend, w)
		}
		if w < n {
			if !l.park(c, h, l.buf[w:n]) {
				return pumpFailed
			}
			c.wr[dst] = false
		}
	}
}

func (l *loop) account(c *conn, toBackend bool, n int) {
	s := c.backend.Stats(l.id)
	if toBackend {
		s.BytesToBackend.Add(uint64(n))
	} else {
		s.BytesToClient.Add(uint64(n))
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
	l.conns.release(c.slot, func(c *conn) bool { return c.state == stFree })
}

// closeBackendConns resets every connection of this loop to backend b.
func (l *loop) closeBackendConns(b *pool.Backend) {
	for _, c := range l.conns.items {
		if c.state != stFree && c.backend == b {
			l.closeConn(c, true)
		}
	}
}
