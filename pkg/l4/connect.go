package l4

import (
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// The backend side of a connection: picking a backend, the non-blocking
// connect and its retries, and the outbound PROXY header.

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
