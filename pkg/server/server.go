// Package server builds the running system from a validated config: the
// pools, the event loops and their listeners. It owns the life cycle:
// start, graceful shutdown and the systemd notifications around them.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/lbd-lb/lbd/healthcheck"
	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l4"
	"github.com/lbd-lb/lbd/pkg/metrics"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// Server is a running lbd.
type Server struct {
	log    *slog.Logger
	engine *l4.Engine

	mu        sync.Mutex
	cfg       *config.Config
	pools     map[string]*pool.Pool
	listeners map[string]*l4.Listener
	started   time.Time
	metrics   *metrics.Server
}

// NewLogger makes the logger the config asks for.
func NewLogger(g config.Global, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: g.LogLevel}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// New builds the pools and event loops for cfg. Nothing listens until
// Start.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	engine, err := l4.New(l4.Options{Loops: cfg.Global.Workers, Logger: log})
	if err != nil {
		return nil, err
	}
	s := &Server{log: log, engine: engine, cfg: cfg, pools: map[string]*pool.Pool{}, listeners: map[string]*l4.Listener{}}
	popts := pool.Options{Loops: engine.Loops(), Logger: log, OnDisable: engine.CloseBackend}
	for _, pc := range cfg.Pools {
		p, err := pool.New(poolSpec(pc), popts, nil)
		if err != nil {
			s.closePools()
			engine.Close()
			return nil, err
		}
		s.pools[pc.Name] = p
	}
	return s, nil
}

func poolSpec(pc config.Pool) pool.Spec {
	spec := pool.Spec{
		Name:            pc.Name,
		Algorithm:       pc.Algorithm,
		Hash:            pc.Hash,
		MaglevTableSize: pc.MaglevTableSize,
		PassiveFailures: pc.PassiveFailures,
		HealthCheck: healthcheck.Config{
			Type:            pc.HealthCheck.Type,
			Interval:        pc.HealthCheck.Interval,
			Timeout:         pc.HealthCheck.Timeout,
			Rise:            pc.HealthCheck.Rise,
			Fall:            pc.HealthCheck.Fall,
			Port:            pc.HealthCheck.Port,
			Path:            pc.HealthCheck.Path,
			Host:            pc.HealthCheck.Host,
			ExpectStatusMin: pc.HealthCheck.ExpectStatusMin,
			ExpectStatusMax: pc.HealthCheck.ExpectStatusMax,
		},
	}
	for _, b := range pc.Backends {
		spec.Backends = append(spec.Backends, pool.BackendSpec{Name: b.Name, Address: b.Address, Weight: b.Weight, MaxConnections: b.MaxConnections})
	}
	return spec
}

func (s *Server) listenerConfig(lc config.Listener) l4.ListenerConfig {
	var pv l4.ProxyVersion
	switch lc.ProxyProtocol {
	case config.ProxyProtocolV1:
		pv = l4.ProxyV1
	case config.ProxyProtocolV2:
		pv = l4.ProxyV2
	}
	return l4.ListenerConfig{
		Name:           lc.Name,
		Bind:           lc.Bind,
		Pool:           s.pools[lc.Pool],
		ProxyProtocol:  pv,
		AcceptProxy:    lc.AcceptProxyProtocol,
		TrustedProxies: lc.TrustedProxies,
		MaxConnections: lc.MaxConnections,
		ConnectTimeout: lc.ConnectTimeout,
		IdleTimeout:    lc.IdleTimeout,
		Retries:        lc.Retries,
	}
}

// Start runs the event loops and binds every listener. When it returns
// nil, every listener accepts.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.engine.Start()
	s.awaitHealth()
	for _, lc := range s.cfg.Listeners {
		ln, err := s.engine.Listen(s.listenerConfig(lc))
		if err != nil {
			s.engine.Close()
			return err
		}
		s.listeners[lc.Name] = ln
		s.log.Info("listening", "listener", lc.Name, "bind", ln.Addr().String(), "pool", lc.Pool, "loops", s.engine.Loops())
	}
	if addr := s.cfg.Global.MetricsListen; addr != "" {
		m, err := metrics.Listen(addr, metrics.Registry(s))
		if err != nil {
			s.engine.Close()
			return fmt.Errorf("metrics_listen %s: %w", addr, err)
		}
		s.metrics = m
		s.log.Info("serving metrics", "addr", m.Addr().String())
	}
	s.started = time.Now()
	return nil
}

// MetricsListeners implements metrics.Source.
func (s *Server) MetricsListeners() []metrics.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]metrics.Listener, 0, len(s.listeners))
	for name, ln := range s.listeners {
		conns, rej := ln.Totals()
		m := metrics.Listener{Name: name, Connections: conns, Active: ln.Active(), Rejected: map[string]uint64{}}
		for i, reason := range l4.RejectReasons {
			m.Rejected[reason] = rej[i]
		}
		out = append(out, m)
	}
	return out
}

// MetricsBackends implements metrics.Source.
func (s *Server) MetricsBackends() []metrics.Backend {
	s.mu.Lock()
	pools := make([]*pool.Pool, 0, len(s.pools))
	for _, p := range s.pools {
		pools = append(pools, p)
	}
	s.mu.Unlock()
	var out []metrics.Backend
	for _, p := range pools {
		for _, b := range p.Backends() {
			conns, errs, toB, toC := b.Totals()
			ok, failed := b.HealthChecks()
			out = append(out, metrics.Backend{Pool: p.Name(), Name: b.Name, Connections: conns, Active: b.Active.Load(),
				BytesToBackend: toB, BytesToClient: toC, ConnectErrors: errs,
				Up: b.Healthy(), Draining: b.Admin() == pool.Draining, Disabled: b.Admin() == pool.Disabled,
				ChecksOK: ok, ChecksFailed: failed})
		}
	}
	return out
}

// awaitHealth waits, at most one probe timeout per pool, for the first
// probe of every backend, so that listeners open with the backends'
// health known.
func (s *Server) awaitHealth() {
	for _, pc := range s.cfg.Pools {
		p := s.pools[pc.Name]
		t := time.NewTimer(pc.HealthCheck.Timeout + 50*time.Millisecond)
		select {
		case <-p.Ready():
		case <-t.C:
			s.log.Warn("first health checks still running; listening anyway", "pool", pc.Name)
		}
		t.Stop()
	}
}

// Listener returns a running listener by name.
func (s *Server) Listener(name string) *l4.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listeners[name]
}

// Pool returns a pool by name.
func (s *Server) Pool(name string) *pool.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pools[name]
}

// Engine is the data plane.
func (s *Server) Engine() *l4.Engine { return s.engine }

// Shutdown stops accepting at once, lets open connections finish until ctx
// is done, then closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	active := s.engine.Active()
	s.log.Info("shutting down", "active_connections", active)
	if s.metrics != nil {
		s.metrics.Close()
	}
	err := s.engine.Shutdown(ctx)
	s.closePools()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		s.log.Warn("shutdown timeout: closed remaining connections")
		return nil
	}
	return err
}

// Close stops everything at once.
func (s *Server) Close() {
	if s.metrics != nil {
		s.metrics.Close()
	}
	s.engine.Close()
	s.closePools()
}

func (s *Server) closePools() {
	for _, p := range s.pools {
		p.Close()
	}
}

// Run starts the server and serves until ctx is done, then shuts down
// gracefully within the config's shutdown_timeout; a second signal (stop
// closed) cuts the wait short.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, stop <-chan struct{}) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	notify("READY=1")
	<-ctx.Done()
	notify("STOPPING=1")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Global.ShutdownTimeout)
	defer cancel()
	go func() {
		select {
		case <-stop:
			log.Warn("second signal: exiting at once")
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := s.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
