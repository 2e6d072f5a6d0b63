package l7

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errCut is what a backend connection the watchdog cut says to a request
// it has not sent: fasthttp closes it, and the request may go again on
// another, whatever its method (TestFasthttpClientRetriesWriteError).
var errCut = errors.New("l7: backend connection cut by a timeout before this request")

// fuseWindow is how recently a backend connection's last read must have
// ended for its next request to be fused.
const fuseWindow = 100 * time.Millisecond

// maxHeld is the most a backendConn holds back from one Read to the next:
// a request header and a small body. Larger writes go out at once.
const maxHeld = 8 << 10

// heldBufs are the buffers of held-back writes, lent out per request so that
// an idle connection holds none.
var heldBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxHeld); return &b }}

// backendConn is a keep-alive connection to a backend, as the fasthttp
// client uses it: write a request, then read its response.
//
// Go's Read first tries the read syscall and waits for the socket only when
// that finds nothing, which it always does right after a request went out:
// one wasted syscall per request. backendConn instead holds a request's
// small writes back until the Read that follows, and sends them from inside
// that Read's wait (syscall.RawConn.Read): the runtime arms the wait before
// the callback runs, so the callback can send the request and go straight to
// waiting, and the answer's arrival cannot be missed.
//
// The runtime's arming also forgets that the socket was readable already,
// which it is when the backend sent nothing but a FIN since the last
// response (an idle connection it closed). Then only a reset in answer to
// the request ends the wait, and a backend that half-closed, or a host gone
// since, sends none: the Read would wait out the read timeout where a plain
// one returns io.EOF at once, which fasthttp retries
// (TestFasthttpClientClosedKeepAlive). So only a hot
// connection, one whose last read ended within fuseWindow (a busy one, where
// the saving matters), is fused; one idle for longer writes and reads the
// usual way.
//
// The read and write timeouts are the watchdog's: each Read is in phRead,
// each write that may block in phWrite. The connection is used by one
// goroutine at a time, except that Close may come from any.
type backendConn struct {
	net.Conn
	timed
	w   *watchdog // nil: no timeouts
	raw syscall.RawConn

	// held is what was written and not yet sent; nil when empty. Only
	// the owner sets it; a Close from another goroutine may drop it
	// (leaving the buffer to the GC rather than to heldBufs, which the
	// owner could still be appending to).
	held atomic.Pointer[[]byte]

	lastRead int64 // approxNow: when a read last returned data
	cut      bool  // cut by the watchdog after its last answer came in

	// The state of one fused Read, for the callback.
	out   []byte // to send first
	sent  int
	p     []byte // the Read's buffer
	n     int
	werr  error                 // of sending
	rerr  error                 // of reading
	ready func(fd uintptr) bool // c.fused, bound once
}

// newBackendConn wraps conn, under w's timeouts unless w is nil, fusing
// writes into reads when conn is a TCP connection.
func newBackendConn(conn net.Conn, w *watchdog) net.Conn {
	c := &backendConn{Conn: conn, w: w, lastRead: approxNow.Load()}
	// Cut through backendConn, which passes deadlines on; closed through
	// it too, so that it is forgotten.
	c.timed.conn = c
	if w != nil {
		w.watch(&c.timed, phBusy)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			c.raw = raw
			c.ready = c.fused
		}
	}
	return c
}

// write writes b the usual way, in phWrite, then goes back to phase ph.
func (c *backendConn) write(b []byte, ph uint64) (int, error) {
	c.enter(phWrite)
	n, err := c.Conn.Write(b)
	c.leave(phWrite, ph)
	return n, err
}

func (c *backendConn) Write(b []byte) (int, error) {
	if c.cut {
		return 0, errCut
	}
	if c.raw == nil {
		return c.write(b, phBusy)
	}
	h := c.held.Load()
	if h == nil && len(b) <= maxHeld {
		h = heldBufs.Get().(*[]byte)
		c.held.Store(h)
	}
	if h != nil && len(*h)+len(b) <= maxHeld {
		*h = append(*h, b...)
		return len(b), nil
	}
	// Too much to hold: what is held goes first, then b, the usual way.
	c.held.Store(nil)
	if h != nil {
		_, err := c.write(*h, phBusy)
		release(h)
		if err != nil {
			return 0, err
		}
	}
	return c.write(b, phBusy)
}

func (c *backendConn) Read(p []byte) (int, error) {
	c.enter(phRead)
	n, err := c.fusedRead(p)
	if !c.leave(phRead, phBusy) && err == nil {
		// Cut as the answer came in: the answer stands, but the read
		// deadline is in the past, so the connection cannot serve
		// another request. The next Write says so before sending.
		c.cut = true
	}
	return n, err
}

// fusedRead sends what is held, if anything, and reads.
func (c *backendConn) fusedRead(p []byte) (int, error) {
	h := c.held.Load()
	if h == nil || len(p) == 0 {
		return c.read(p)
	}
	c.held.Store(nil)
	defer release(h)
	if approxNow.Load()-c.lastRead > int64(fuseWindow) {
		// Idle for a while: it may hold a FIN the fused wait would miss.
		if _, err := c.write(*h, phRead); err != nil {
			return 0, err
		}
		return c.read(p)
	}
	c.out, c.sent, c.p, c.n, c.werr, c.rerr = *h, 0, p, 0, nil, nil
	err := c.raw.Read(c.ready)
	rest := c.out[c.sent:]
	n, werr, rerr := c.n, c.werr, c.rerr
	c.out, c.p, c.werr, c.rerr = nil, nil, nil, nil
	switch {
	case err != nil: // the wait ended: deadline or close
		return 0, c.opError("read", err)
	case werr == syscall.EPIPE || werr == syscall.ECONNRESET:
		// The backend closed before the request reached it: to the
		// client, a connection closed before any answer byte, which it
		// may retry.
		return 0, io.EOF
	case werr != nil:
		return 0, c.opError("write", werr)
	case rerr == io.EOF:
		return 0, io.EOF
	case rerr != nil:
		return 0, c.opError("read", rerr)
	case len(rest) > 0:
		// The socket was full: the rest goes the usual way, under the
		// write timeout, and the answer is read the usual way too.
		if _, err := c.write(rest, phRead); err != nil {
			return 0, err
		}
		return c.read(p)
	}
	c.lastRead = approxNow.Load()
	return n, nil
}

// read is a plain Read that notes when it returned data.
func (c *backendConn) read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.lastRead = approxNow.Load()
	}
	return n, err
}

// fused is the callback of a fused Read: on its first call it sends what was
// held and asks to wait; once the socket is readable it reads.
func (c *backendConn) fused(fd uintptr) bool {
	if c.sent < len(c.out) {
		for c.sent < len(c.out) {
			n, err := unix.Write(int(fd), c.out[c.sent:])
			if n > 0 {
				c.sent += n
			}
			switch err {
			case nil, unix.EINTR:
			case unix.EAGAIN:
				return true // Read sends the rest
			default:
				c.werr = err
				return true
			}
		}
		return false // sent: wait for the answer without reading first
	}
	for {
		n, err := unix.Read(int(fd), c.p)
		switch err {
		case nil:
			if n == 0 {
				c.rerr = io.EOF
			}
			c.n = n
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false
		default:
			c.rerr = err
			return true
		}
	}
}

func (c *backendConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Close drops what is held: a request not yet sent is abandoned with its
// connection.
func (c *backendConn) Close() error {
	c.held.Store(nil)
	if c.w != nil {
		c.w.forget(&c.timed)
	}
	return c.Conn.Close()
}

func release(h *[]byte) {
	*h = (*h)[:0]
	heldBufs.Put(h)
}
