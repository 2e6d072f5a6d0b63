package l4

import (
	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe used as the in-kernel buffer of one direction of
// one connection while bytes are in flight.
type pipe struct {
	r, w int
}

// pipePool keeps empty pipes for reuse by one event loop. It is owned by
// that loop and never shared, so it needs no lock.
//
// Invariant: every pipe in free is empty. A pipe that might still hold data
// is closed instead of pooled, since stale bytes would leak into another
// connection.
type pipePool struct {
	free    []pipe
	max     int // most idle pipes kept
	size    int // capacity set with F_SETPIPE_SZ
	created uint64
}

func newPipePool(size, max int) *pipePool {
	return &pipePool{size: size, max: max, free: make([]pipe, 0, max)}
}

func (pp *pipePool) get() (pipe, error) {
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		return p, nil
	}
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return pipe{}, err
	}
	pp.created++
	if pp.size > 0 {
		// Ignore the error: a smaller pipe (the 64 KiB default) still
		// works, it only takes more splice calls for bulk transfers.
		unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pp.size)
	}
	return pipe{r: fds[0], w: fds[1]}, nil
}

// put returns an empty pipe to the pool.
func (pp *pipePool) put(p pipe) {
	if len(pp.free) < pp.max {
		pp.free = append(pp.free, p)
		return
	}
	p.close()
}

func (p pipe) close() {
	rawClose(p.r)
	rawClose(p.w)
}

func (pp *pipePool) closeAll() {
	for _, p := range pp.free {
		p.close()
	}
	pp.free = pp.free[:0]
}
