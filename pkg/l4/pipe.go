package l4

import (
	"os"

	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe used as the in-kernel buffer of one direction of
// one connection while bytes are in flight.
type pipe struct {
	r, w int
	cap  int // capacity in bytes, as F_GETPIPE_SZ reported it
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
	// floor is the least capacity any pipe of this pool can have, and so
	// the most the copy path reads at once: a partial write parks the
	// rest in a pipe, which must take all of it. For a privileged process
	// it is size. An unprivileged user past fs.pipe-user-pages-soft gets
	// pipes of one or two pages, which F_SETPIPE_SZ cannot grow, so its floor is
	// minPipeCap from the start: knowing it only once a small pipe came
	// would be too late for the read already made.
	floor int
}

// minPipeCap is the least capacity of a pipe made by an unprivileged user
// past fs.pipe-user-pages-soft: two pages since Linux 5.14, one before.
var minPipeCap = os.Getpagesize()

// defaultPipeCap is the capacity of a pipe that F_SETPIPE_SZ did not
// resize; fcntl(F_GETPIPE_SZ) reports the real one.
const defaultPipeCap = 64 << 10

func newPipePool(size, maxIdle int, limited bool) *pipePool {
	// A privileged process gets its size, or the default capacity should
	// F_SETPIPE_SZ fail (past fs.pipe-max-size).
	floor := min(size, defaultPipeCap)
	if limited {
		floor = minPipeCap
	}
	return &pipePool{size: size, max: maxIdle, free: make([]pipe, 0, maxIdle), floor: floor}
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
		// transfers take more splice calls, and copy reads never exceed
		// floor.
		unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, pp.size)
	}
	c, err := unix.FcntlInt(uintptr(fds[0]), unix.F_GETPIPE_SZ, 0)
	if err != nil || c <= 0 {
		c = minPipeCap
	}
	return pipe{r: fds[0], w: fds[1], cap: c}, nil
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
