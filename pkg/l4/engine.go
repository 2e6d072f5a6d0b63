// Package l4 is lbd's layer-4 data plane: one epoll event loop per core,
// each with its own SO_REUSEPORT listening socket per listener, forwarding
// bytes between clients and backends with splice(2) through pooled pipes.
//
// A connection belongs to the loop that accepted it for its whole life, so
// nothing on the per-connection path is shared between loops except the
// per-backend and per-listener active counts, which are atomics.
package l4

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// Options tunes the engine. The zero value is usable.
type Options struct {
	// Loops is the number of event loops; 0 means one per CPU.
	Loops int
	// PipeSize is the capacity given to each pipe with F_SETPIPE_SZ.
	// Default 256 KiB.
	PipeSize int
	// CopyBuffer is the size of each loop's read/write buffer. Small
	// messages are forwarded with one read and one write through it, which
	// costs fewer system calls than two splices; a direction switches to
	// splice as soon as one read fills the buffer, that is when the
	// transfer is bulk. Default 16 KiB. -1 disables the copy path, so that
	// every byte is spliced.
	CopyBuffer int
	// MaxIdlePipes is how many empty pipes each loop keeps for reuse.
	// Default 64.
	MaxIdlePipes int
	// AcceptPause is how long a loop stops accepting on a listener after
	// running out of file descriptors. Default 100ms.
	AcceptPause time.Duration
	// Logger receives the data plane's (debug-level) messages.
	Logger *slog.Logger
	// Clock is the loops' monotonic clock: time since an origin of its
	// own, read once per loop iteration, by which connect, idle, header
	// and flow timeouts run. nil is the runtime's monotonic clock. Tests
	// pass one they move by hand; a loop reads it when it wakes, so they
	// wake the loops after moving it.
	Clock func() time.Duration
}

func (o *Options) setDefaults() {
	if o.Loops <= 0 {
		o.Loops = runtime.NumCPU()
	}
	if o.PipeSize == 0 {
		o.PipeSize = 256 << 10
	}
	if o.CopyBuffer == 0 {
		o.CopyBuffer = 16 << 10
	}
	if o.CopyBuffer > 0 && o.CopyBuffer > o.PipeSize {
		// A partial write parks the rest of the buffer in a pipe, which
		// must have room for all of it.
		o.CopyBuffer = o.PipeSize
	}
	if o.MaxIdlePipes == 0 {
		o.MaxIdlePipes = 64
	}
	if o.AcceptPause == 0 {
		o.AcceptPause = 100 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// ProxyVersion selects the PROXY protocol header sent to backends.
type ProxyVersion int

// PROXY protocol versions.
const (
	ProxyNone ProxyVersion = 0
	ProxyV1   ProxyVersion = 1
	ProxyV2   ProxyVersion = 2
)

// ListenerConfig is what the data plane needs to know about a tcp or udp
// listener. A running listener's config can be replaced (on reload) without
// touching its sockets; connections already open keep the config they
// started with.
type ListenerConfig struct {
	Name string
	Bind netip.AddrPort
	Pool *pool.Pool
	// ProxyProtocol is the header sent to the backend before any client
	// byte.
	ProxyProtocol ProxyVersion
	// AcceptProxy requires a PROXY header (v1 or v2) from every client,
	// which must connect from one of TrustedProxies.
	AcceptProxy    bool
	TrustedProxies []netip.Prefix
	// ProxyHeaderTimeout bounds the wait for the inbound header. Default
	// 5s.
	ProxyHeaderTimeout time.Duration
	MaxConnections     int
	ConnectTimeout     time.Duration
	IdleTimeout        time.Duration // 0 = none; for udp, a flow's idle time
	Retries            int
	// UDP makes a udp listener: datagrams, tracked as flows.
	UDP bool
	// UDPMaxFlows caps the listener's flows (0 = unlimited); UDPResponses
	// ends a flow after that many replies (0 = at IdleTimeout only).
	UDPMaxFlows, UDPResponses int
	// UDPReuseSockets keeps the socket of a flow that got all its replies
	// for the next new flow to that backend (see spareFlow).
	UDPReuseSockets bool
	// UDPReplyTimeout ends a flow that has had no reply this long after
	// it began (0 = only IdleTimeout): a datagram from a forged source
	// gets no reply its sender could see, and must not hold a place in
	// the table for IdleTimeout. When the table is full, a new flow also
	// takes the place of the oldest flow still without a reply.
	UDPReplyTimeout time.Duration
}

// Reasons a listener closes a connection without forwarding it.
const (
	RejectMaxConnections = iota
	RejectNoBackend
	RejectProxyHeader
	numRejectReasons
)

// RejectReasons names the reject counters, in index order, as the metrics
// label them.
var RejectReasons = [numRejectReasons]string{"max_connections", "no_backend", "proxy_header"}

// ListenerLoopStats are one loop's counters for one listener.
type ListenerLoopStats struct {
	Connections atomic.Uint64
	Rejected    [numRejectReasons]atomic.Uint64
	_           [32]byte
}

// Listener is a tcp or udp listener open in every loop.
type Listener struct {
	cfg    atomic.Pointer[ListenerConfig]
	addr   netip.AddrPort
	udp    bool
	active atomic.Int64 // open connections, or for udp live flows
	stats  []ListenerLoopStats
	// udpStats are the datagram counters of a udp listener.
	udpStats []UDPLoopStats
	fds      []int // one SO_REUSEPORT socket per loop
	closed   bool
	// pickers holds each loop's picker for the listener's pool (see
	// loop.picker), indexed by loop.
	pickers []loopPicker
}

// loopPicker is one loop's picker for a listener: made by the balancer of
// snap, the pool's snapshot the loop picked from last, and kept until the
// pool publishes another. Only that loop touches it, so a pick takes no
// lock, and allocates nothing while the snapshot stays the same.
type loopPicker struct {
	snap   *pool.Snapshot
	picker balancer.Picker
	_      [40]byte // each loop's on a cache line of its own
}

// UDP reports whether this is a udp listener.
func (l *Listener) UDP() bool { return l.udp }

// UDPTotals sums a udp listener's datagram counters over loops.
func (l *Listener) UDPTotals() (toBackend, toClient uint64, dropped [numDropReasons]uint64) {
	for i := range l.udpStats {
		s := &l.udpStats[i]
		toBackend += s.ToBackend.Load()
		toClient += s.ToClient.Load()
		for r := range dropped {
			dropped[r] += s.Dropped[r].Load()
		}
	}
	return
}

// Config is the listener's current config.
func (l *Listener) Config() *ListenerConfig { return l.cfg.Load() }

// Addr is the bound address (with the actual port when the config asked
// for port 0).
func (l *Listener) Addr() netip.AddrPort { return l.addr }

// Active is the number of open connections accepted by the listener.
func (l *Listener) Active() int64 { return l.active.Load() }

// Stats returns loop i's counters.
func (l *Listener) Stats(loop int) *ListenerLoopStats { return &l.stats[loop] }

// Totals sums the per-loop counters.
func (l *Listener) Totals() (conns uint64, rejected [numRejectReasons]uint64) {
	for i := range l.stats {
		conns += l.stats[i].Connections.Load()
		for r := range rejected {
			rejected[r] += l.stats[i].Rejected[r].Load()
		}
	}
	return
}

// LoopStats are one loop's own counters.
type LoopStats struct {
	// SplicedBytes counts bytes moved from a socket into a pipe by
	// splice(2): bytes that never entered user space.
	SplicedBytes atomic.Uint64
	// CopiedBytes counts bytes read into the loop's buffer by read(2).
	CopiedBytes atomic.Uint64
	// AcceptPauses counts pauses after EMFILE, ENFILE and similar.
	AcceptPauses atomic.Uint64
	// PipesCreated counts pipes made (not taken from the pool).
	PipesCreated atomic.Uint64
	_            [32]byte
}

// Engine runs the event loops.
type Engine struct {
	opts   Options
	loops  []*loop
	stats  []LoopStats
	budget pipeBudget

	mu        sync.Mutex
	listeners []*Listener
	wg        sync.WaitGroup
	started   bool
}

// New creates the loops. Call Start to run them.
func New(opts Options) (*Engine, error) {
	opts.setDefaults()
	e := &Engine{opts: opts, stats: make([]LoopStats, opts.Loops)}
	e.budget = readPipeBudget(opts.PipeSize)
	if e.budget.limited {
		// Idle pipes count against the budget too: keep few enough that
		// most of it stays for connections in flight.
		if perLoop := e.budget.pipes / (4 * opts.Loops); perLoop < e.opts.MaxIdlePipes {
			e.opts.MaxIdlePipes = max(perLoop, 1)
		}
		opts.Logger.Info("pipe budget", "soft_limit_pages", e.budget.pages, "full_size_pipes", e.budget.pipes,
			"pipe_size", opts.PipeSize, "idle_pipes_per_loop", e.opts.MaxIdlePipes,
			"note", "past it pipes are 8 KiB: bulk transfers take more system calls, none fails")
	}
	for i := 0; i < opts.Loops; i++ {
		l, err := newLoop(e, i)
		if err != nil {
			e.closeLoops()
			return nil, err
		}
		e.loops = append(e.loops, l)
	}
	return e, nil
}

// Loops is the number of event loops.
func (e *Engine) Loops() int { return len(e.loops) }

// pipeBudget is what Linux lets this process hold in pipes.
type pipeBudget struct {
	// limited is set for an unprivileged process (without CAP_SYS_RESOURCE
	// or CAP_SYS_ADMIN) under a soft limit: past fs.pipe-user-pages-soft
	// pages, counted over all of its user's pipes, new pipes get two
	// pages and F_SETPIPE_SZ fails.
	limited bool
	pages   int // fs.pipe-user-pages-soft
	pipes   int // pipes of the configured size that fit in it
}

// readPipeBudget learns the budget from /proc.
func readPipeBudget(pipeSize int) pipeBudget {
	b, err := os.ReadFile("/proc/sys/fs/pipe-user-pages-soft")
	if err != nil {
		return pipeBudget{}
	}
	pages, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pages <= 0 || privilegedForPipes() {
		return pipeBudget{}
	}
	return pipeBudget{limited: true, pages: pages, pipes: pages / max(1, pipeSize/4096)}
}

// privilegedForPipes reports whether this process has CAP_SYS_RESOURCE or
// CAP_SYS_ADMIN in its effective set, which exempt it from the pipe limits.
func privilegedForPipes() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE|1<<unix.CAP_SYS_ADMIN) != 0
		}
	}
	return false
}

// Stats returns loop i's counters.
func (e *Engine) Stats(i int) *LoopStats { return &e.stats[i] }

// TotalSpliced and TotalCopied sum SplicedBytes and CopiedBytes over loops.
func (e *Engine) TotalSpliced() (spliced, copied uint64) {
	for i := range e.stats {
		spliced += e.stats[i].SplicedBytes.Load()
		copied += e.stats[i].CopiedBytes.Load()
	}
	return
}

// Start runs every loop in its own goroutine. The goroutines are not
// locked to threads: an idle loop parks on the runtime's poller (see
// loop.wait), and a locked goroutine would make every wake-up a hand-off
// between threads.
func (e *Engine) Start() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return
	}
	e.started = true
	for _, l := range e.loops {
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			l.run()
		}()
	}
}

// Listen opens cfg.Bind in every loop and starts accepting on it.
func (e *Engine) Listen(cfg ListenerConfig) (*Listener, error) {
	if cfg.Pool == nil {
		return nil, fmt.Errorf("listener %q: no pool", cfg.Name)
	}
	if cfg.ProxyHeaderTimeout <= 0 {
		cfg.ProxyHeaderTimeout = 5 * time.Second
	}
	ln := &Listener{stats: make([]ListenerLoopStats, len(e.loops)), pickers: make([]loopPicker, len(e.loops)), udp: cfg.UDP}
	if cfg.UDP {
		ln.udpStats = make([]UDPLoopStats, len(e.loops))
	}
	ln.cfg.Store(&cfg)
	bind := cfg.Bind
	open := listenSocket
	if cfg.UDP {
		open = listenUDP
	}
	for range e.loops {
		fd, addr, err := open(bind)
		if err != nil {
			for _, fd := range ln.fds {
				rawClose(fd)
			}
			return nil, fmt.Errorf("listener %q: %w", cfg.Name, err)
		}
		// With port 0 the first socket picks the port and the others
		// join it.
		bind = addr
		ln.fds = append(ln.fds, fd)
	}
	ln.addr = bind
	e.mu.Lock()
	e.listeners = append(e.listeners, ln)
	e.mu.Unlock()
	for i, l := range e.loops {
		fd := ln.fds[i]
		l.exec(func() { l.addListener(ln, fd) })
	}
	return ln, nil
}

// Update replaces a listener's config. Its sockets stay open, so no
// connection attempt is refused; the bind address must not change.
func (e *Engine) Update(ln *Listener, cfg ListenerConfig) error {
	if cfg.Bind != ln.Config().Bind || cfg.UDP != ln.udp {
		return errors.New("l4: a listener's bind address and protocol cannot change in place")
	}
	if cfg.Pool == nil {
		return fmt.Errorf("listener %q: no pool", cfg.Name)
	}
	if cfg.ProxyHeaderTimeout <= 0 {
		cfg.ProxyHeaderTimeout = 5 * time.Second
	}
	ln.cfg.Store(&cfg)
	return nil
}

// CloseListener stops accepting on ln in every loop. Connections it
// accepted continue.
func (e *Engine) CloseListener(ln *Listener) {
	e.mu.Lock()
	if ln.closed {
		e.mu.Unlock()
		return
	}
	ln.closed = true
	for i, x := range e.listeners {
		if x == ln {
			e.listeners = append(e.listeners[:i], e.listeners[i+1:]...)
			break
		}
	}
	e.mu.Unlock()
	e.eachLoop(func(l *loop) { l.removeListener(ln) })
}

// CloseBackend resets every open connection to b, in every loop. It is
// how disabling a backend takes effect; it waits until every loop has done
// so.
func (e *Engine) CloseBackend(b *pool.Backend) {
	e.eachLoop(func(l *loop) {
		for _, t := range transports {
			t.backendGone(l, b)
		}
	})
}

// Active is the number of open connections across all loops.
func (e *Engine) Active() int64 {
	var n int64
	for _, l := range e.loops {
		n += l.activeCount.Load()
	}
	return n
}

// Shutdown stops accepting at once, waits until every connection has ended
// or ctx is done, then closes what remains and stops the loops.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	lns := append([]*Listener(nil), e.listeners...)
	e.mu.Unlock()
	for _, ln := range lns {
		e.CloseListener(ln)
	}
	var err error
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for e.Active() > 0 {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-tick.C:
			continue
		}
		break
	}
	e.Close()
	return err
}

// Close closes every connection and stops the loops at once.
func (e *Engine) Close() {
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	if started {
		for _, l := range e.loops {
			l.exec(func() { l.stop() })
		}
		e.wg.Wait()
	}
	e.closeLoops()
}

func (e *Engine) closeLoops() {
	for _, l := range e.loops {
		l.release()
	}
}

// eachLoop runs fn on every loop and waits for all of them.
func (e *Engine) eachLoop(fn func(l *loop)) {
	e.mu.Lock()
	started := e.started
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, l := range e.loops {
		if !started {
			fn(l)
			continue
		}
		wg.Add(1)
		l.exec(func() { fn(l); wg.Done() })
	}
	wg.Wait()
}

// listenSocket opens a non-blocking SO_REUSEPORT listening TCP socket.
func listenSocket(bind netip.AddrPort) (int, netip.AddrPort, error) {
	return bindSocket(bind, unix.SOCK_STREAM, func(fd, _ int) (string, error) {
		// Accepted sockets inherit TCP_NODELAY from the listener.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return "setsockopt", err
		}
		return "", nil
	}, func(fd int) (string, error) {
		if err := unix.Listen(fd, 4096); err != nil {
			return "listen", err
		}
		return "", nil
	})
}

// bindSocket opens a non-blocking SO_REUSEPORT socket of sotype bound to
// bind, with setup run before bind(2) and after run after it. It returns
// the bound address, with the port the kernel chose when bind's is 0 (the
// other loops then bind that one).
func bindSocket(bind netip.AddrPort, sotype int, setup func(fd, family int) (string, error), after func(fd int) (string, error)) (int, netip.AddrPort, error) {
	family := unix.AF_INET
	if bind.Addr().Is6() && !bind.Addr().Is4In6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, sotype|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, bind, os.NewSyscallError("socket", err)
	}
	fail := func(call string, err error) (int, netip.AddrPort, error) {
		unix.Close(fd)
		return -1, bind, os.NewSyscallError(call, err)
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			return fail("setsockopt", err)
		}
	}
	if call, err := setup(fd, family); err != nil {
		return fail(call, err)
	}
	sa := sockaddrFrom(bind)
	if family == unix.AF_INET {
		sa = sockaddrFrom(netip.AddrPortFrom(bind.Addr().Unmap(), bind.Port()))
	}
	if err := rawBind(fd, &sa); err != nil {
		return fail("bind", err)
	}
	if after != nil {
		if call, err := after(fd); err != nil {
			return fail(call, err)
		}
	}
	var got sockaddr
	if err := rawGetsockname(fd, &got); err != nil {
		return fail("getsockname", err)
	}
	// Keep the configured address (its IPv6 form, too) for the other
	// loops' binds; only the port comes from the kernel.
	return fd, netip.AddrPortFrom(bind.Addr(), got.addrPort().Port()), nil
}

func rawBind(fd int, sa *sockaddr) error {
	_, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(sa.ptr()), uintptr(sa.len))
	return errnoErr(e)
}
