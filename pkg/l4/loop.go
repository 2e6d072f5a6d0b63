package l4

import (
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Tags in the low bits of an epoll event's Pad field say what its Fd field
// indexes; the rest of Pad is the connection's generation, so that events
// for a connection closed earlier in the same batch are recognised and
// dropped.
const (
	tagClient = iota
	tagBackend
	tagListener
	tagControl
	tagFlow
	tagBits = 3
	tagMask = 1<<tagBits - 1
	genMask = 1<<(32-tagBits) - 1
)

const (
	eventsPerWait = 256
	acceptBatch   = 64
	// pumpBudget bounds the bytes one direction moves per turn, so that a
	// bulk transfer cannot starve the loop's other connections.
	pumpBudget = 1 << 20
	// wheelTick is the timer resolution.
	wheelTick  = 10 * time.Millisecond
	wheelSlots = 4096
)

// loopListener is one loop's socket for a Listener.
type loopListener struct {
	ln          *Listener
	fd          int
	idx         int
	paused      bool
	pausedUntil int64
	more        bool // accepted a full batch: run again before waiting
	kind        int  // kindTCP or kindUDP: its transport
}

// loop is one event loop. Everything in it is owned by its goroutine except
// cmds, which other goroutines use to hand it work.
type loop struct {
	e    *Engine
	id   int
	epfd int
	evfd int
	// waiter is a non-blocking duplicate of epfd in the Go runtime's own
	// poller: an idle loop parks on it like any goroutine waiting for a
	// socket, instead of blocking its thread in epoll_wait (see wait).
	waiter   *os.File
	waiterRC syscall.RawConn
	log      *slog.Logger
	stats    *LoopStats

	events []unix.EpollEvent
	// waitDeadline is set while waiter has a read deadline.
	waitDeadline bool
	conns        slotTable[conn] // see slots.go
	lns          []*loopListener

	pipes   *pipePool
	buf     []byte // copy buffer
	scratch []byte // inbound PROXY header peek buffer
	sa      sockaddr
	wheel   *wheel
	base    time.Time
	now     int64 // nanoseconds since base, read once per iteration

	udp *udpState // nil until a udp listener joins this loop

	pending    []int32 // connections with work left after their budget
	accepting  []*loopListener
	pausedLns  int
	stopped    bool
	activeConn int64
	// activeCount mirrors activeConn for other goroutines.
	activeCount atomic.Int64

	cmdMu  sync.Mutex
	cmds   []func()
	halted bool // the loop goroutine has ended; guarded by cmdMu
}

func newLoop(e *Engine, id int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.Join(errors.New("epoll_create1"), err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, errors.Join(errors.New("eventfd"), err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Pad: tagControl}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, errors.Join(errors.New("epoll_ctl"), err)
	}
	waiter, rc, err := pollerFile(epfd)
	if err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, err
	}
	l := &loop{
		e:        e,
		id:       id,
		epfd:     epfd,
		evfd:     evfd,
		waiter:   waiter,
		waiterRC: rc,
		log:      e.opts.Logger.With("loop", id),
		stats:    &e.stats[id],
		events:   make([]unix.EpollEvent, eventsPerWait),
		pipes:    newPipePool(e.opts.PipeSize, e.opts.MaxIdlePipes, e.budget.limited),
		scratch:  make([]byte, proxyHeaderMax),
		base:     time.Now(),
	}
	if e.opts.CopyBuffer > 0 {
		l.buf = make([]byte, e.opts.CopyBuffer)
	}
	l.wheel = newWheel(int64(wheelTick), wheelSlots, 0)
	return l, nil
}

// exec hands fn to the loop and wakes it. Once the loop has stopped,
// nothing is served any more: fn runs on the caller's goroutine, so that
// a caller waiting for it is not stranded.
func (l *loop) exec(fn func()) {
	l.cmdMu.Lock()
	if l.halted {
		l.cmdMu.Unlock()
		fn()
		return
	}
	l.cmds = append(l.cmds, fn)
	var one = [8]byte{1}
	unix.Write(l.evfd, one[:])
	l.cmdMu.Unlock()
}

func (l *loop) runCommands() {
	var b [8]byte
	rawRead(l.evfd, b[:])
	l.cmdMu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.cmdMu.Unlock()
	for _, fn := range cmds {
		fn()
	}
}

func (l *loop) clock() int64 {
	if c := l.e.opts.Clock; c != nil {
		return int64(c())
	}
	return int64(time.Since(l.base))
}

func (l *loop) run() {
	for !l.stopped {
		l.now = l.clock()
		l.wheel.advance(l.now, l.fireTimer)
		if l.pausedLns > 0 {
			l.resumeListeners()
		}
		n, err := rawEpollPoll(l.epfd, l.events)
		if n == 0 && err == nil && len(l.pending) == 0 && len(l.accepting) == 0 && (l.udp == nil || len(l.udp.moreReplies) == 0) {
			n, err = l.wait(l.waitMillis())
			l.now = l.clock()
		}
		if err != nil && err != unix.EINTR {
			l.log.Error("epoll_wait failed", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		for i := 0; i < n; i++ {
			l.dispatch(&l.events[i])
		}
		l.runPending()
		l.udpFlush()
	}
	l.closeAll()
	l.cmdMu.Lock()
	l.halted = true
	cmds := l.cmds
	l.cmds = nil
	l.cmdMu.Unlock()
	// Commands that raced with the stop run here, on a loop with nothing
	// left in it.
	for _, fn := range cmds {
		fn()
	}
}

// pollerFile returns a non-blocking duplicate of epfd, registered with the
// Go runtime's poller, and its RawConn.
func pollerFile(epfd int) (*os.File, syscall.RawConn, error) {
	dup, err := unix.FcntlInt(uintptr(epfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, nil, errors.Join(errors.New("dup epoll fd"), err)
	}
	if err := unix.SetNonblock(dup, true); err != nil {
		unix.Close(dup)
		return nil, nil, errors.Join(errors.New("dup epoll fd"), err)
	}
	f := os.NewFile(uintptr(dup), "epoll")
	if f.SetReadDeadline(time.Time{}) != nil {
		// Not in the runtime's poller after all: the loop blocks in
		// epoll_wait instead (see wait).
		f.Close()
		return nil, nil, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, errors.Join(errors.New("dup epoll fd"), err)
	}
	return f, rc, nil
}

// wait waits up to ms milliseconds (forever for -1) for events and returns
// them as rawEpollPoll does.
//
// A loop that blocked in epoll_wait would hold its thread in a system call
// the scheduler must watch: sysmon then wakes every 20 µs or so to take the
// P back, and the loop pays the slow path of exitsyscall on every wake-up,
// a sizeable share of a core when traffic is steady but not saturating.
// Parked on the runtime's poller instead, the loop costs nothing while it
// waits: the epoll fd turns readable when any of its descriptors has an
// event, and the runtime wakes the goroutine then.
func (l *loop) wait(ms int) (n int, err error) {
	if ms == 0 {
		return rawEpollPoll(l.epfd, l.events)
	}
	if l.waiter == nil {
		// The runtime's poller did not take the epoll fd (it always
		// does on Linux): block in epoll_wait as a plain system call.
		return unix.EpollWait(l.epfd, l.events, ms)
	}
	if ms > 0 {
		l.waiter.SetReadDeadline(time.Now().Add(time.Duration(ms) * time.Millisecond))
		l.waitDeadline = true
	} else if l.waitDeadline {
		l.waiter.SetReadDeadline(time.Time{})
		l.waitDeadline = false
	}
	rerr := l.waiterRC.Read(func(uintptr) bool {
		n, err = rawEpollPoll(l.epfd, l.events)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
	if rerr != nil && !errors.Is(rerr, os.ErrDeadlineExceeded) {
		return 0, rerr
	}
	return n, err
}

// waitMillis is the epoll timeout: until the next timer tick, or the end of
// the earliest accept pause, or forever.
func (l *loop) waitMillis() int {
	d := l.wheel.untilNext(l.now)
	if l.pausedLns > 0 {
		for _, ll := range l.lns {
			if ll.paused {
				if p := ll.pausedUntil - l.now; d < 0 || p < d {
					d = max(p, 0)
				}
			}
		}
	}
	if d < 0 {
		return -1
	}
	return int((d + int64(time.Millisecond) - 1) / int64(time.Millisecond))
}

func (l *loop) dispatch(ev *unix.EpollEvent) {
	tag := ev.Pad & tagMask
	switch tag {
	case tagControl:
		l.runCommands()
		return
	case tagListener:
		idx := int(ev.Fd)
		if idx < len(l.lns) && l.lns[idx] != nil {
			ll := l.lns[idx]
			transports[ll.kind].ready(l, ll)
		}
		return
	case tagFlow:
		transports[kindUDP].event(l, ev)
		return
	}
	transports[kindTCP].event(l, ev)
}

// connEvent handles readiness of either socket of a connection.
func (l *loop) connEvent(ev *unix.EpollEvent) {
	tag := ev.Pad & tagMask
	c := l.conns.at(ev.Fd)
	if c == nil || c.gen != uint32(ev.Pad)>>tagBits {
		return
	}
	side := sideClient
	if tag == tagBackend {
		side = sideBackend
	}
	if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.rd[side] = true
		if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			c.hup[side] = true
		}
	}
	if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		c.wr[side] = true
	}
	l.handle(c, side, ev.Events)
}

func (l *loop) runPending() {
	if l.udp != nil && len(l.udp.moreReplies) > 0 {
		l.runMoreReplies()
	}
	if len(l.accepting) > 0 {
		acc := l.accepting
		l.accepting = nil
		for _, ll := range acc {
			ll.more = false
			if ll.idx < len(l.lns) && l.lns[ll.idx] == ll {
				transports[ll.kind].ready(l, ll)
			}
		}
	}
	if len(l.pending) == 0 {
		return
	}
	pend := l.pending
	l.pending = nil
	for _, idx := range pend {
		c := l.conns.at(idx)
		if c == nil || !c.queued {
			continue
		}
		c.queued = false
		if c.state == stForwarding {
			l.service(c)
		}
	}
}

func (l *loop) addListener(ln *Listener, fd int) {
	ll := &loopListener{ln: ln, fd: fd, idx: -1}
	if ln.udp {
		ll.kind = kindUDP
		l.udpInit()
	}
	for i, x := range l.lns {
		if x == nil {
			ll.idx = i
			l.lns[i] = ll
			break
		}
	}
	if ll.idx < 0 {
		ll.idx = len(l.lns)
		l.lns = append(l.lns, ll)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(ll.idx), Pad: tagListener}
	if err := rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.log.Error("epoll_ctl listener", "listener", ln.Config().Name, "err", err)
	}
	// Connections may have queued before the socket joined epoll.
	transports[ll.kind].ready(l, ll)
}

func (l *loop) removeListener(ln *Listener) {
	for i, ll := range l.lns {
		if ll != nil && ll.ln == ln {
			if ll.paused {
				l.pausedLns--
			}
			transports[ll.kind].leaving(l, ll)
			rawClose(ll.fd)
			l.lns[i] = nil
		}
	}
}

// accept takes up to one batch of new connections from ll.
func (l *loop) accept(ll *loopListener) {
	if ll.paused {
		return
	}
	for i := 0; i < acceptBatch; i++ {
		fd, err := rawAccept4(ll.fd, &l.sa)
		if err != nil {
			switch err {
			case unix.EAGAIN:
				return
			case unix.EINTR, unix.ECONNABORTED, unix.EPROTO:
				continue
			case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
				// Out of descriptors or memory. Stop accepting for a
				// moment rather than spin on an edge that will not
				// clear; open connections go on, and pending ones
				// wait in the backlog.
				l.pauseAccepting(err)
				return
			default:
				l.log.Debug("accept failed", "listener", ll.ln.Config().Name, "err", err)
				return
			}
		}
		l.newConn(ll.ln, fd, l.sa.addrPort())
	}
	if !ll.more {
		ll.more = true
		l.accepting = append(l.accepting, ll)
	}
}

// acceptQueued accepts every connection waiting in ll's queue before its
// socket closes: closing a listening socket resets the connections it
// holds, which completed their handshake and may have sent their first
// bytes already. They are served like any other.
func (l *loop) acceptQueued(ll *loopListener) {
	// Bounded: new connections keep arriving at this socket until it
	// closes, and a flood must not hold the loop here.
	for range acceptQueuedMax {
		fd, err := rawAccept4(ll.fd, &l.sa)
		if err == unix.EINTR || err == unix.ECONNABORTED || err == unix.EPROTO {
			continue
		}
		if err != nil {
			return
		}
		l.newConn(ll.ln, fd, l.sa.addrPort())
	}
}

// acceptQueuedMax bounds the connections acceptQueued takes from a closing
// socket: a backlog's worth.
const acceptQueuedMax = 4096

// outOfDescriptors reports errors that mean the process or system has run
// out of descriptors or socket memory.
func outOfDescriptors(err error) bool {
	switch err {
	case unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM:
		return true
	}
	return false
}

// pauseAccepting stops this loop accepting on every listener for
// AcceptPause. Each loop pauses when it meets the limit itself.
func (l *loop) pauseAccepting(err error) {
	l.stats.AcceptPauses.Add(1)
	l.log.Debug("accept paused", "err", err)
	for _, ll := range l.lns {
		if ll != nil && !ll.paused {
			ll.paused = true
			ll.pausedUntil = l.now + int64(l.e.opts.AcceptPause)
			l.pausedLns++
		}
	}
}

func (l *loop) resumeListeners() {
	for _, ll := range l.lns {
		if ll != nil && ll.paused && l.now >= ll.pausedUntil {
			ll.paused = false
			l.pausedLns--
			transports[ll.kind].ready(l, ll)
		}
	}
}

func (l *loop) stop() {
	l.stopped = true
}

// closeAll closes every connection and listener socket; the loop is
// stopping.
func (l *loop) closeAll() {
	for _, t := range transports {
		t.closeAll(l)
	}
	for i, ll := range l.lns {
		if ll != nil {
			rawClose(ll.fd)
			l.lns[i] = nil
		}
	}
	l.pipes.closeAll()
}

// release frees the loop's own descriptors after it has stopped.
func (l *loop) release() {
	l.cmdMu.Lock()
	defer l.cmdMu.Unlock()
	l.halted = true
	if l.epfd >= 0 {
		if l.waiter != nil {
			l.waiter.Close()
		}
		unix.Close(l.epfd)
		unix.Close(l.evfd)
		l.epfd, l.evfd = -1, -1
	}
}

// allocConn takes a free connection slot.
func (l *loop) allocConn() *conn {
	return l.conns.alloc(func(slot int32, gen uint32) *conn { return &conn{slot: slot, gen: gen} })
}

// register adds fd to epoll for c's side.
func (l *loop) register(c *conn, fd int, tag int32) error {
	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     c.slot,
		Pad:    int32(c.gen<<tagBits) | tag,
	}
	return rawEpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// arm files c in the timer wheel if its deadline is earlier than the one
// it is filed under.
func (l *loop) arm(c *conn) {
	due := c.due()
	if due == 0 {
		return
	}
	t := l.wheel.tickOf(due)
	if c.timerTick >= 0 && c.timerTick <= t {
		return
	}
	c.timerTick = l.wheel.add(timerRef{kind: kindTCP, slot: c.slot, gen: c.gen}, due)
}

func (l *loop) fireTimer(ref timerRef, tick int64) { transports[ref.kind].fire(l, ref, tick) }

func (l *loop) fireConnTimer(ref timerRef, tick int64) {
	c := l.conns.at(ref.slot)
	if c == nil || c.gen != ref.gen || c.state == stFree || c.timerTick != tick {
		return
	}
	c.timerTick = -1
	due := c.due()
	if due == 0 {
		return
	}
	if due > l.now {
		c.timerTick = l.wheel.add(ref, due)
		return
	}
	l.expire(c)
}
