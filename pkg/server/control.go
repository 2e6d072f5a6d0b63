package server

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/pool"
	"github.com/lbd-lb/lbd/pkg/version"
)

var _ admin.Controller = (*Server)(nil)

// Status implements admin.Controller.
func (s *Server) Status() admin.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := admin.Status{
		Version:    version.Version,
		StartedAt:  s.started,
		Uptime:     time.Since(s.started).Round(time.Second).String(),
		ConfigFile: s.cfg.File,
		LastReload: s.lastReload,
	}
	for _, lc := range s.cfg.Listeners {
		if h := s.http[lc.Name]; h != nil {
			// Requests, not connections, are what an http listener
			// counts; its metrics have them by route and code.
			st.Listeners = append(st.Listeners, admin.ListenerStatus{Name: lc.Name, Bind: h.Addr(), Protocol: lc.Protocol})
			continue
		}
		ln := s.listeners[lc.Name]
		if ln == nil {
			continue
		}
		conns, _ := ln.Totals()
		st.Listeners = append(st.Listeners, admin.ListenerStatus{
			Name: lc.Name, Bind: ln.Addr().String(), Protocol: lc.Protocol, Pool: lc.Pool,
			ActiveConnections: ln.Active(), TotalConnections: conns,
		})
	}
	return st
}

func backendView(p *pool.Pool, b *pool.Backend) admin.Backend {
	conns, _, _, _ := b.Totals()
	health := "down"
	if b.Healthy() {
		health = "up"
	}
	return admin.Backend{
		Pool: p.Name(), Name: b.Name, Address: b.Addr.String(),
		State: b.Admin().String(), Health: health, Weight: b.Weight(),
		ActiveConnections: b.Active.Load(), TotalConnections: conns,
	}
}

func poolView(p *pool.Pool) admin.Pool {
	v := admin.Pool{Name: p.Name(), Algorithm: p.Spec().Algorithm, Backends: []admin.Backend{}}
	for _, b := range p.Backends() {
		v.Backends = append(v.Backends, backendView(p, b))
	}
	return v
}

// Pools implements admin.Controller, in config order.
func (s *Server) Pools() []admin.Pool {
	s.mu.Lock()
	var ps []*pool.Pool
	for _, pc := range s.cfg.Pools {
		ps = append(ps, s.pools[pc.Name])
	}
	s.mu.Unlock()
	out := []admin.Pool{}
	for _, p := range ps {
		out = append(out, poolView(p))
	}
	return out
}

func (s *Server) find(poolName, backend string) (*pool.Pool, *pool.Backend, error) {
	p := s.LivePool(poolName)
	if p == nil {
		return nil, nil, fmt.Errorf("%w: pool %q", admin.ErrNotFound, poolName)
	}
	if backend == "" {
		return p, nil, nil
	}
	b := p.Backend(backend)
	if b == nil {
		return nil, nil, fmt.Errorf("%w: backend %q in pool %q", admin.ErrNotFound, backend, poolName)
	}
	return p, b, nil
}

// Pool implements admin.Controller.
func (s *Server) Pool(name string) (admin.Pool, error) {
	p, _, err := s.find(name, "")
	if err != nil {
		return admin.Pool{}, err
	}
	return poolView(p), nil
}

// Backend implements admin.Controller.
func (s *Server) Backend(poolName, backend string) (admin.Backend, error) {
	p, b, err := s.find(poolName, backend)
	if err != nil {
		return admin.Backend{}, err
	}
	return backendView(p, b), nil
}

// operate applies an operator action and records it in the state file.
func (s *Server) operate(poolName, backend string, act func(*pool.Pool, *pool.Backend) error) error {
	// Look up under reloadMu: a reload in progress would otherwise leave
	// us acting on the pool it is replacing.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	p, b, err := s.find(poolName, backend)
	if err != nil {
		return err
	}
	if err := act(p, b); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.saveStateLocked(); err != nil {
		s.log.Warn("state file not written", "file", s.cfg.Global.StateFile, "err", err)
	}
	return nil
}

// Drain implements admin.Controller.
func (s *Server) Drain(poolName, backend string) error {
	return s.operate(poolName, backend, (*pool.Pool).Drain)
}

// Enable implements admin.Controller.
func (s *Server) Enable(poolName, backend string) error {
	return s.operate(poolName, backend, (*pool.Pool).Enable)
}

// Disable implements admin.Controller.
func (s *Server) Disable(poolName, backend string) error {
	return s.operate(poolName, backend, (*pool.Pool).Disable)
}

// SetWeight implements admin.Controller.
func (s *Server) SetWeight(poolName, backend string, weight int) error {
	return s.operate(poolName, backend, func(p *pool.Pool, b *pool.Backend) error {
		if err := p.SetWeight(b, weight); err != nil {
			if errors.Is(err, pool.ErrWeight) {
				return fmt.Errorf("%w: %w", admin.ErrInvalid, err)
			}
			return err
		}
		return nil
	})
}

// LivePool returns a running pool by name.
func (s *Server) LivePool(name string) *pool.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pools[name]
}

// Listeners returns the running listeners' names, sorted.
func (s *Server) Listeners() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name := range s.listeners {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// ListenerAddr is the address the named listener is bound to, with the
// port the kernel chose when its bind has port 0; "" when there is no such
// listener.
func (s *Server) ListenerAddr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.http[name]; h != nil {
		return h.Addr()
	}
	if ln := s.listeners[name]; ln != nil {
		return ln.Addr().String()
	}
	return ""
}

// MetricsAddr is the address the metrics endpoint listens on, or "" when
// it is off.
func (s *Server) MetricsAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.metrics == nil {
		return ""
	}
	return s.metrics.Addr().String()
}
