package l4

import (
	"golang.org/x/sys/unix"
)

// The pump: moving a connection's bytes, by copy for small messages and
// by splice through pipes for bulk, with backpressure and half-close.

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
	pumpOn            // a step of pump is done: pump goes on
)

// pump moves bytes of one direction from src to dst until the source has
// nothing more, the destination is full (backpressure: the bytes stay in
// the pipe and the source is not read until they drain), the budget is
// used up, or the source's FIN has been passed on.
func (l *loop) pump(c *conn, h, other *half, src, dst int) int {
	moved := 0
	for {
		if h.n > 0 {
			if r := l.drainPipe(c, h, dst); r != pumpOn {
				return r
			}
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
			return l.endDirection(c, h, other, dst)
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
		var n, r int
		if h.bulk || l.buf == nil {
			n, r = l.spliceIn(c, h, src)
		} else {
			n, r = l.copyThrough(c, h, src, dst)
		}
		if r != pumpOn {
			return r
		}
		moved += n
	}
}

// drainPipe splices what h's pipe holds to dst, as far as dst takes it.
func (l *loop) drainPipe(c *conn, h *half, dst int) int {
	if !c.wr[dst] {
		return pumpIdle
	}
	n, err := rawSplice(h.p.r, c.fd[dst], h.n)
	if err != nil {
		if err == unix.EAGAIN {
			c.wr[dst] = false
			return pumpIdle
		}
		return pumpFailed
	}
	h.n -= n
	c.lastSeen = l.now // delivery is progress: a slow reader is never idle
	l.account(c, dst == sideBackend, n)
	return pumpOn
}

// endDirection passes on the end of h's stream, every byte of it
// delivered: a FIN to dst, unless the other direction has ended too.
func (l *loop) endDirection(c *conn, h, other *half, dst int) int {
	if h.held {
		l.pipes.put(h.p)
		h.held = false
	}
	// When the other direction has ended too, the connection is closed
	// next, and close(2) sends the FIN: both receive queues were read to
	// EOF, so it cannot turn into a reset.
	if !other.shut {
		if err := rawShutdown(c.fd[dst], unix.SHUT_WR); err != nil && err != unix.ENOTCONN {
			return pumpFailed
		}
	}
	h.shut = true
	return pumpIdle
}

// spliceIn splices what src has into h's pipe (taking a pipe if h holds
// none), and returns how much it moved.
func (l *loop) spliceIn(c *conn, h *half, src int) (int, int) {
	if !h.held {
		p, err := l.getPipe()
		if err != nil {
			if l.buf == nil {
				return 0, pumpFailed
			}
			// Out of descriptors: copy through the buffer instead of
			// failing the connection.
			h.bulk = false
			return 0, pumpOn
		}
		h.p, h.held = p, true
	}
	n, err := rawSplice(c.fd[src], h.p.w, l.e.opts.PipeSize)
	if err != nil {
		if err == unix.EAGAIN {
			c.rd[src] = false
			return 0, pumpOn
		}
		return 0, pumpFailed
	}
	if n == 0 {
		h.eof = true
		return 0, pumpOn
	}
	h.n += n
	c.lastSeen = l.now
	l.stats.SplicedBytes.Add(uint64(n))
	if n < len(l.buf)/4 {
		// The stream has gone quiet; small reads are cheaper copied.
		h.bulk = false
	}
	return n, pumpOn
}

// copyThrough reads what src has into the loop's buffer and writes it to
// dst, parking in h's pipe what dst does not take now, and returns how
// much it read.
func (l *loop) copyThrough(c *conn, h *half, src, dst int) (int, int) {
	// Never read more than a pipe can take: a partial write parks the
	// rest in one.
	n, err := rawRead(c.fd[src], l.buf[:min(len(l.buf), l.pipes.floor)])
	if err != nil {
		if err == unix.EAGAIN {
			c.rd[src] = false
			return 0, pumpOn
		}
		return 0, pumpFailed
	}
	if n == 0 {
		h.eof = true
		return 0, pumpOn
	}
	c.lastSeen = l.now
	l.stats.CopiedBytes.Add(uint64(n))
	if n == min(len(l.buf), l.pipes.floor) {
		h.bulk = true
	} else if !c.hup[src] {
		// A short read from a stream socket emptied its receive queue, so
		// the next read would only say EAGAIN. More data, or a FIN,
		// raises a new edge.
		c.rd[src] = false
	}
	w := 0
	if c.wr[dst] {
		w, err = rawWrite(c.fd[dst], l.buf[:n])
		if err != nil {
			if err != unix.EAGAIN {
				return n, pumpFailed
			}
			w = 0
			c.wr[dst] = false
		}
		l.account(c, dst == sideBackend, w)
	}
	if w < n {
		if !l.park(c, h, l.buf[w:n]) {
			return n, pumpFailed
		}
		c.wr[dst] = false
	}
	return n, pumpOn
}

func (l *loop) account(c *conn, toBackend bool, n int) {
	s := c.backend.Stats(l.id)
	if toBackend {
		s.BytesToBackend.Add(uint64(n))
	} else {
		s.BytesToClient.Add(uint64(n))
	}
}
