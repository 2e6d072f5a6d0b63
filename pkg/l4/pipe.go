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
	size    int // capacity asked for with F_SETPIPE_SZ
	created uint64
	// minCap is the smallest capacity any pipe got. F_SETPIPE_SZ can
	// fail (an unprivileged user past pipe-user-pages-soft gets small
	// pipes); reads through the copy buffer never exceed it, so a partial
	// write always fits into a pipe.
	minCap int
}

// defaultPipeCap is the capacity of a pipe that F_SETPIPE_SZ did not
// resize; fcntl(F_GETPIPE_SZ) reports the real one.
const defaultPipeCap = 64 << 10

func newPipePool(size, maxIdle int) *pipePool {
	return &pipePool{size: size, max: maxIdle, free: make([]pipe, 0, maxIdle), minCap: max(size, defaultPipeCap)}
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
		// An error leaves a smaller pipe, which still works: bulk
		// transfers take more splice calls, and copy reads shrink to
		// fit (minCap).
		unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pp.size)
	}
	if c, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETPIPE_SZ, 0); err == nil && c > 0 && c < pp.minCap {
		pp.minCap = c
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
