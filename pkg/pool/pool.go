// Package pool holds the live set of backends of one pool: their addresses,
// weights, exact active-connection counts and per-loop traffic counters. It
// publishes the eligible backends, with a balancer built over them, as an
// immutable Snapshot through an atomic pointer; the event loops read it on
// every new connection and never take a lock.
package pool

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/lbd-lb/lbd/balancer"
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
	Backends        []BackendSpec
}

// LoopStats are one event loop's counters for one backend. Only that loop
// writes them, so the atomics are never contended; they are atomics so that
// a metrics scrape can read them while the loop runs.
type LoopStats struct {
	Connections    atomic.Uint64
	ConnectErrors  atomic.Uint64
	BytesToBackend atomic.Uint64
	BytesToClient  atomic.Uint64
	_              [32]byte // keep loops' counters on separate cache lines
}

// Backend is one backend's live state. Its address and name never change;
// a reload that changes them makes a new Backend.
type Backend struct {
	Name    string
	Addr    netip.AddrPort
	MaxConn int64 // 0 = unlimited

	// Active is the exact number of open connections to the backend.
	// least_conn and p2c read it, so every open and close updates it.
	Active atomic.Int64

	weight atomic.Int32
	// consecutive connect failures seen by the data plane, for passive
	// health checking.
	connectFailures atomic.Int32

	stats []LoopStats
}

// Stats returns the counters kept by loop i.
func (b *Backend) Stats(loop int) *LoopStats { return &b.stats[loop] }

// Weight is the backend's current weight.
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// Totals sums the per-loop counters.
func (b *Backend) Totals() (conns, errs, toBackend, toClient uint64) {
	for i := range b.stats {
		s := &b.stats[i]
		conns += s.Connections.Load()
		errs += s.ConnectErrors.Load()
		toBackend += s.BytesToBackend.Load()
		toClient += s.BytesToClient.Load()
	}
	return
}

// Snapshot is the immutable set of backends eligible for new connections,
// with the balancer built over exactly that slice.
type Snapshot struct {
	Backends []*Backend
	Balancer balancer.Balancer
	// HashPort makes the client port part of the maglev key.
	HashPort bool
}

// Pool is the live state of one pool.
type Pool struct {
	spec  Spec
	loops int

	mu       sync.Mutex // serialises rebuilds; never taken by the data plane
	backends []*Backend
	snap     atomic.Pointer[Snapshot]
}

// New builds a pool for a data plane of the given number of event loops.
func New(spec Spec, loops int) (*Pool, error) {
	if loops < 1 {
		loops = 1
	}
	p := &Pool{spec: spec, loops: loops}
	for _, bs := range spec.Backends {
		b := &Backend{Name: bs.Name, Addr: bs.Address, MaxConn: int64(bs.MaxConnections), stats: make([]LoopStats, loops)}
		if b.Name == "" {
			b.Name = bs.Address.String()
		}
		b.weight.Store(int32(bs.Weight))
		p.backends = append(p.backends, b)
	}
	if err := p.rebuild(); err != nil {
		return nil, fmt.Errorf("pool %q: %w", spec.Name, err)
	}
	return p, nil
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.spec.Name }

// Spec is the configuration the pool was built from.
func (p *Pool) Spec() Spec { return p.spec }

// Snapshot returns the current eligible set. It never returns nil.
func (p *Pool) Snapshot() *Snapshot { return p.snap.Load() }

// Backends returns every backend of the pool, eligible or not.
func (p *Pool) Backends() []*Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Backend(nil), p.backends...)
}

// Backend finds a backend by name, or by address for one without a name.
func (p *Pool) Backend(name string) *Backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.backends {
		if b.Name == name || b.Addr.String() == name {
			return b
		}
	}
	return nil
}

// SetWeight changes a backend's weight. New picks follow it; open
// connections are not moved.
func (p *Pool) SetWeight(b *Backend, w int) error {
	if w < 1 || w > 10000 {
		return fmt.Errorf("weight %d out of range 1..10000", w)
	}
	b.weight.Store(int32(w))
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rebuildLocked()
}

func (p *Pool) rebuild() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.rebuildLocked()
}

// rebuildLocked builds a new balancer over the eligible backends and
// publishes it. It runs off the hot path, whenever membership, weight or
// state changes.
func (p *Pool) rebuildLocked() error {
	var eligible []*Backend
	var bb []balancer.Backend
	for _, b := range p.backends {
		eligible = append(eligible, b)
		bb = append(bb, balancer.Backend{Name: b.Name, Weight: b.Weight(), Active: &b.Active})
	}
	bal, err := balancer.New(p.spec.Algorithm, bb, balancer.Options{Loops: p.loops, TableSize: p.spec.MaglevTableSize})
	if err != nil {
		return err
	}
	p.snap.Store(&Snapshot{Backends: eligible, Balancer: bal, HashPort: p.spec.Hash == "source_ip_port"})
	return nil
}

// ConnectFailed records a failed connect to b seen by the data plane.
func (p *Pool) ConnectFailed(b *Backend) {
	b.connectFailures.Add(1)
}

// ConnectSucceeded records a successful connect to b.
func (p *Pool) ConnectSucceeded(b *Backend) {
	if b.connectFailures.Load() != 0 {
		b.connectFailures.Store(0)
	}
}
