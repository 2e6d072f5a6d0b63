package l7

import (
	"crypto/tls"
	"net"
	"time"
)

// A client connection of an http listener, as the watchdog keeps it: every read and write enters the phase whose timeout bounds it.

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
// connection closes at once. Each watchdog holds its own copy, which tests
// lower.
const maxLingering = 1024

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
		if n := c.w.lingering.Add(1); n <= c.w.maxLingering.Load() {
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
