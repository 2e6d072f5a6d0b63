// Package pool holds the live set of backends of one pool: their addresses,
// health and operator state, weights, exact active-connection counts and
// sharded traffic counters. It joins the balancer and the health checker:
// every change of state rebuilds the balancer over the eligible backends,
// off the hot path, and publishes it as an immutable Snapshot through an
// atomic pointer. The event loops read the snapshot on every new connection
// and pick with pickers of their own; nothing on that path takes a lock.
package pool

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/healthcheck"
)

// BackendSpec describes one backend as configured.
type BackendSpec struct {
	Name           string
	Address        netip.AddrPort
	Weight         int
	MaxConnections int
}

// Spec describes a pool as configured.
type Spec struct {
	Name            string
	Algorithm       string // maglev | least_conn | wrr | p2c
	Hash            string // source_ip | source_ip_port
	MaglevTableSize int
	PassiveFailures int
	HealthCheck     healthcheck.Config
	Backends        []BackendSpec
}

// Options are the pool's ties to the rest of the process.
type Options struct {
	// Loops is the number of event loops; per-loop counters are sized by
	// it. At least 1. Callers that are not event loops count through
	// Backend.SharedStats instead.
	Loops int
	// Logger receives one info line per change of a backend's state.
	Logger *slog.Logger
	// OnDisable closes the open connections of a backend that an operator
	// disabled. It runs off the hot path and may block briefly.
	OnDisable func(b *Backend)
	// Health are extra options for the health checker (a fake clock or
	// prober in tests).
	Health []healthcheck.Option
}

// AdminState is the operator's state of a backend, independent of its
// health.
type AdminState int32

// Operator states.
const (
	// Active backends take new connections when healthy.
	Active AdminState = iota
	// Draining backends take no new connections or flows; open ones go on.
	Draining
	// Disabled backends take nothing new, and their open connections are
	// closed.
	Disabled
)

func (s AdminState) String() string {
	switch s {
	case Draining:
		return "draining"
	case Disabled:
		return "disabled"
	}
	return "active"
}

// LoopStats are one event loop's counters for one backend. Only that loop
// writes them, so the atomics are never contended; they are atomics so that
// a metrics scrape can read them while the loop runs. The same counters
// also make the shards of SharedStats.
type LoopStats struct {
	Connections    atomic.Uint64
	ConnectErrors  atomic.Uint64
	BytesToBackend atomic.Uint64
	BytesToClient  atomic.Uint64
	_              [32]byte // keep loops' counters on separate cache lines
}

// Backend is one backend's live state. Its name and address never change;
// a reload keeps the same Backend for a backend whose name and address are
// unchanged, so that its counters, health and operator state carry over.
type Backend struct {
	Name string
	Addr netip.AddrPort
	// MaxConn caps open connections; 0 = unlimited. A reload may change
	// it while loops read it.
	MaxConn atomic.Int64

	// Active is the exact number of open connections to the backend.
	// least_conn, p2c, drain --wait and the metrics read it, so every open
	// and close updates it.
	Active atomic.Int64

	weight atomic.Int32
	// weightSet records that an operator set the weight at runtime; such a
	// weight survives reloads.
	weightSet atomic.Bool
	healthy   atomic.Bool
	admin     atomic.Int32
	// consecutive connect failures seen by the data plane, for passive
	// health checking.
	connectFailures atomic.Int32
	checksOK        atomic.Uint64
	checksFailed    atomic.Uint64
	// owner is the live pool this backend belongs to: passive verdicts
	// from connections opened under an older config go to it.
	owner atomic.Pointer[Pool]

	stats []LoopStats
	// shared are the counter shards of callers that are not event loops
	// (see SharedStats), one per CPU the process had when the backend was
	// made.
	shared []LoopStats
}

// Stats returns the counters kept by loop i, 0 <= i < Options.Loops. Only
// that event loop may write them.
func (b *Backend) Stats(loop int) *LoopStats { return &b.stats[loop] }

// SharedStats returns one of the counter shards kept for callers that are
// not event loops, such as the http listeners, whose handlers run on any
// goroutine: a shard chosen at random, so that goroutines on different
// cores seldom write the same one. Any goroutine may write it (the
// counters are atomics), and may keep it for the rest of a request. It
// allocates nothing and takes no lock.
func (b *Backend) SharedStats() *LoopStats {
	i := uint64(rand.Uint32()) * uint64(len(b.shared)) >> 32
	return &b.shared[i]
}

func newBackend(name string, addr netip.AddrPort, loops int) *Backend {
	return &Backend{Name: name, Addr: addr, stats: make([]LoopStats, loops), shared: make([]LoopStats, runtime.GOMAXPROCS(0))}
}

// Weight is the backend's current weight.
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// WeightSet reports whether an operator set the weight at runtime.
func (b *Backend) WeightSet() bool { return b.weightSet.Load() }

// Healthy reports the backend's health.
func (b *Backend) Healthy() bool { return b.healthy.Load() }

// Admin is the operator's state of the backend.
func (b *Backend) Admin() AdminState { return AdminState(b.admin.Load()) }

// Eligible reports whether the backend may take new connections.
func (b *Backend) Eligible() bool { return b.Healthy() && b.Admin() == Active }

// HealthChecks returns the number of successful and failed probes.
func (b *Backend) HealthChecks() (ok, failed uint64) {
	return b.checksOK.Load(), b.checksFailed.Load()
}

// Totals sums the counters of every loop and shared shard.
func (b *Backend) Totals() (conns, errs, toBackend, toClient uint64) {
	for _, shards := range [][]LoopStats{b.stats, b.shared} {
		for i := range shards {
			s := &shards[i]
			conns += s.Connections.Load()
			errs += s.ConnectErrors.Load()
			toBackend += s.BytesToBackend.Load()
			toClient += s.BytesToClient.Load()
		}
	}
	return
}

// Snapshot is the immutable set of backends eligible for new connections,
// with the balancer built over exactly that slice.
//
// An event loop keeps a picker of its own per snapshot
// (Balancer.NewPicker). Callers on arbitrary goroutines, such as the http
// listeners, pick with Pick, through pickers that the snapshot keeps for
// them.
type Snapshot struct {
	Backends []*Backend
	Balancer balancer.Balancer
	// HashPort makes the client port part of the maglev key.
	HashPort bool

	// pickers are Pick's pickers of Balancer, each held by one pick at a
	// time.
	pickers sync.Pool
}

// Pick returns the index in Backends of the backend for a new connection,
// or -1 when every one is excluded by tried, like balancer.Picker.Pick. It
// is safe for concurrent use from any goroutine: each call holds one of
// the snapshot's pickers for the pick alone. sync.Pool keeps them per core,
// so goroutines on different cores share no lock and no picker, and a
// goroutine mostly meets the picker its core used last, whose sequence
// (wrr) stays smooth. Once a core has a picker, Pick allocates nothing.
func (s *Snapshot) Pick(key uint64, tried *balancer.Tried) int {
	pk, _ := s.pickers.Get().(balancer.Picker)
	if pk == nil {
		pk = s.Balancer.NewPicker()
	}
	i := pk.Pick(key, tried)
	s.pickers.Put(pk)
	return i
}

// Errors from operator actions.
var (
	ErrWeight = errors.New("pool: weight out of range 1..10000")
)

// Pool is the live state of one pool.
type Pool struct {
	spec Spec
	opts Options
	log  *slog.Logger

	mu       sync.Mutex // serialises changes and rebuilds; never taken by the data plane
	backends []*Backend
	byName   map[string]*Backend
	checker  *healthcheck.Checker
	closed   bool
	// live is set once the pool is in use (Activate); before that it
	// writes nothing into backends it may share with the pool it
	// replaces, so a reload that fails changes nothing.
	live bool
	// health is this pool's own view, from its own checker: two pools
	// sharing a backend during a reload each decide from theirs.
	health map[*Backend]bool
	// weight and maxConn are the configured values, written into the
	// backends on Activate (an operator's weight takes precedence).
	weight  map[*Backend]int
	maxConn map[*Backend]int64
	// pending names the new backends whose first probe has not reported
	// yet; ready is closed when it empties.
	pending map[string]bool
	ready   chan struct{}

	snap atomic.Pointer[Snapshot]
	hist *connectHistogram
}

// New builds a pool and starts its health checks. prev, when not nil, is
// the pool this one replaces on a reload: a backend with the same name and
// address is carried over whole (counters, health, operator state, and a
// weight set by an operator), so that open connections stay counted
// exactly and nothing flaps. Such a pool changes nothing in the shared
// backends until the caller calls Activate, at the reload's commit; the
// caller then closes prev. A pool without prev is live at once.
func New(spec Spec, opts Options, prev *Pool) (*Pool, error) {
	if opts.Loops < 1 {
		opts.Loops = 1
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{spec: spec, opts: opts, log: opts.Logger.With("pool", spec.Name), byName: map[string]*Backend{},
		pending: map[string]bool{}, ready: make(chan struct{}),
		health: map[*Backend]bool{}, weight: map[*Backend]int{}, maxConn: map[*Backend]int64{}}
	if prev != nil && len(prev.hist.loops) == opts.Loops {
		p.hist = prev.hist
	} else {
		p.hist = &connectHistogram{loops: make([]loopHistogram, opts.Loops)}
	}
	carried := map[*Backend]healthcheck.State{}
	for _, bs := range spec.Backends {
		name := bs.Name
		if name == "" {
			name = bs.Address.String()
		}
		var b *Backend
		if prev != nil {
			if old := prev.Backend(name); old != nil && old.Addr == bs.Address && len(old.stats) == opts.Loops {
				b = old
				// The old checker's state, Known included: a backend
				// still waiting for its first probe keeps waiting for
				// one, rather than being taken for down.
				carried[b] = prev.healthState(old)
			}
		}
		if b == nil {
			b = newBackend(name, bs.Address, opts.Loops)
			b.weight.Store(int32(bs.Weight))
			b.MaxConn.Store(int64(bs.MaxConnections))
		}
		p.weight[b] = bs.Weight
		p.maxConn[b] = int64(bs.MaxConnections)
		p.backends = append(p.backends, b)
		p.byName[name] = b
	}
	// Building the balancer first catches a spec it rejects before any
	// probe starts.
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.buildLocked(p.backends); err != nil {
		return nil, fmt.Errorf("pool %q: %w", spec.Name, err)
	}
	hopts := append([]healthcheck.Option{
		healthcheck.OnProbe(p.onProbe),
		healthcheck.WithLogger(p.log),
	}, opts.Health...)
	p.checker = healthcheck.New(spec.HealthCheck, p.onHealth, hopts...)
	for _, b := range p.backends {
		st := p.checker.Add(b.Name, b.Addr, carried[b])
		p.health[b] = st.Up
		if _, shared := carried[b]; !shared {
			b.healthy.Store(st.Up)
		}
		if !st.Known {
			p.pending[b.Name] = true
		}
	}
	if len(p.pending) == 0 {
		close(p.ready)
	}
	if err := p.rebuildLocked(); err != nil {
		p.checker.Close()
		return nil, fmt.Errorf("pool %q: %w", spec.Name, err)
	}
	if prev == nil {
		// Nothing is shared with another pool: live at once.
		p.activateLocked()
	}
	return p, nil
}

// healthState is this pool's checker's view of b.
func (p *Pool) healthState(b *Backend) healthcheck.State {
	return p.checker.State(b.Name)
}

// Activate makes the pool the live one for its backends: the configured
// weights and limits are written into them (a weight an operator set stays),
// their health follows this pool's checker, and passive verdicts come here.
// The server calls it at start and when a reload commits.
func (p *Pool) Activate() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.activateLocked()
}

func (p *Pool) activateLocked() {
	p.live = true
	for _, b := range p.backends {
		if !b.weightSet.Load() {
			b.weight.Store(int32(p.weight[b]))
		}
		b.MaxConn.Store(p.maxConn[b])
		b.healthy.Store(p.health[b])
		b.owner.Store(p)
	}
	if err := p.rebuildLocked(); err != nil {
		p.log.Error("rebuilding balancer", "err", err)
	}
}

// Close stops the pool's health checks. Its backends may live on in the
// pool that replaced it.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	c := p.checker
	p.mu.Unlock()
	// Outside the lock: Close waits for pending events, whose delivery
	// takes the lock.
	c.Close()
}

// Ready is closed once every backend's health is known: the first probe of
// each new backend has reported, whatever its result. Waiting for it before
// listening means no client is turned away at start-up for want of a
// verdict that was milliseconds away.
func (p *Pool) Ready() <-chan struct{} { return p.ready }

// Name is the pool's name.
func (p *Pool) Name() string { return p.spec.Name }

// Spec is the configuration the pool was built from.
func (p *Pool) Spec() Spec { return p.spec }

// Snapshot returns the current eligible set. It never returns nil.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Backends returns every backend of the pool, eligible or not, in config
// order.
func (p *Pool) Backends() []*Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Backend(nil), p.backends...)
}

// Backend finds a backend by name, or by address for one without a name.
func (p *Pool) Backend(name string) *Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.byName[name]; b != nil {
		return b
	}
	for _, b := range p.backends {
		if b.Addr.String() == name {
			return b
		}
	}
	return nil
}

// SetWeight changes a backend's weight. New picks follow it; open
// connections are not moved. The weight survives reloads.
func (p *Pool) SetWeight(b *Backend, w int) error {
	if w < 1 || w > balancer.MaxWeight {
		return fmt.Errorf("%w: %d", ErrWeight, w)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	old := b.Weight()
	b.weight.Store(int32(w))
	b.weightSet.Store(true)
	if old != w {
		p.log.Info("backend weight", "backend", b.Name, "weight", w, "was", old)
	}
	return p.rebuildLocked()
}

// Drain stops new connections to b; open ones continue, and health checks
// go on.
func (p *Pool) Drain(b *Backend) error { return p.setAdmin(b, Draining) }

// Disable stops new connections to b and closes its open ones.
func (p *Pool) Disable(b *Backend) error { return p.setAdmin(b, Disabled) }

// Enable undoes Drain or Disable.
func (p *Pool) Enable(b *Backend) error { return p.setAdmin(b, Active) }

func (p *Pool) setAdmin(b *Backend, s AdminState) error {
	p.mu.Lock()
	old := b.Admin()
	b.admin.Store(int32(s))
	var err error
	if old != s {
		p.log.Info("backend "+s.String(), "backend", b.Name, "reason", "operator", "was", old.String())
		err = p.rebuildLocked()
	}
	p.mu.Unlock()
	// Close connections after the new snapshot is out, so that no new
	// connection lands on b while its old ones are being closed.
	if s == Disabled && p.opts.OnDisable != nil {
		p.opts.OnDisable(b)
	}
	return err
}

// onHealth applies a health checker's verdict.
func (p *Pool) onHealth(ev healthcheck.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.byName[ev.ID]
	if b == nil || p.closed {
		return
	}
	if p.pending[ev.ID] {
		delete(p.pending, ev.ID)
		if len(p.pending) == 0 {
			close(p.ready)
		}
	}
	if p.health[b] == ev.Up {
		return
	}
	p.health[b] = ev.Up
	if ev.Up {
		b.connectFailures.Store(0)
		p.log.Info("backend up", "backend", b.Name, "reason", ev.Reason)
	} else {
		p.log.Info("backend down", "backend", b.Name, "reason", ev.Reason)
	}
	if err := p.rebuildLocked(); err != nil {
		p.log.Error("rebuilding balancer", "err", err)
	}
	// Published after the snapshot: whoever sees the new health (lbctl,
	// metrics, a test) finds the balancer already following it.
	if p.live {
		b.healthy.Store(ev.Up)
	}
}

func (p *Pool) onProbe(id string, ok bool) {
	p.mu.Lock()
	b := p.byName[id]
	p.mu.Unlock()
	if b == nil {
		return
	}
	if ok {
		b.checksOK.Add(1)
	} else {
		b.checksFailed.Add(1)
	}
}

// rebuildLocked builds a new balancer over the eligible backends and
// publishes it.
func (p *Pool) rebuildLocked() error {
	var eligible []*Backend
	for _, b := range p.backends {
		if p.health[b] && b.Admin() == Active {
			eligible = append(eligible, b)
		}
	}
	bal, err := p.buildLocked(eligible)
	if err != nil {
		return err
	}
	p.snap.Store(&Snapshot{Backends: eligible, Balancer: bal, HashPort: p.spec.Hash == "source_ip_port"})
	return nil
}

func (p *Pool) buildLocked(set []*Backend) (balancer.Balancer, error) {
	bb := make([]balancer.Backend, len(set))
	for i, b := range set {
		w := p.weight[b]
		if b.weightSet.Load() {
			w = b.Weight()
		}
		bb[i] = balancer.Backend{Name: b.Name, Weight: w, Active: &b.Active}
	}
	return balancer.New(p.spec.Algorithm, bb, balancer.Options{TableSize: p.spec.MaglevTableSize})
}

// ConnectFailed records a failed connect to b seen by the data plane.
// PassiveFailures of them in a row take b down at once.
//
// The verdict goes to the backend's live pool, which may be newer than p
// when the connection was set up under an older config. Every failure from
// the limit on renews it, so that a backend failing on does not rise in
// the meantime.
func (p *Pool) ConnectFailed(b *Backend) {
	n := b.connectFailures.Add(1)
	live := b.owner.Load()
	if live == nil {
		live = p
	}
	if lim := live.spec.PassiveFailures; lim > 0 && int(n) >= lim {
		live.checker.PassiveDown(b.Name, fmt.Sprintf("%d consecutive connect failures", n))
	}
}

// ConnectSucceeded records a successful connect to b.
func (p *Pool) ConnectSucceeded(b *Backend) {
	if b.connectFailures.Load() != 0 {
		b.connectFailures.Store(0)
	}
}
