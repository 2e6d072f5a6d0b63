// Package server builds the running system from a validated config: the
// pools, the event loops and their listeners. It owns the life cycle:
// start, hot reload, graceful shutdown, the admin API and metrics, and the
// systemd notifications around them.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l4"
	"github.com/lbd-lb/lbd/pkg/l7"
	"github.com/lbd-lb/lbd/pkg/metrics"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// Server is a running lbd.
type Server struct {
	log      *slog.Logger
	logLevel *slog.LevelVar
	engine   *l4.Engine
	// load re-reads the config for a reload; nil when the config did not
	// come from a file (the demo), which makes reload refuse.
	load func() (*config.Config, error)

	// reloadMu serialises reloads and state-file writes.
	reloadMu sync.Mutex

	mu         sync.Mutex
	cfg        *config.Config
	pools      map[string]*pool.Pool
	listeners  map[string]*l4.Listener // tcp and udp, by listener name
	http       map[string]*httpListener
	started    time.Time
	lastReload *admin.Reload
	metrics    *metrics.Server
	metricsReg *metrics.ReloadCounters
	admin      *admin.Server
}

// Options are how the server is tied to its process.
type Options struct {
	// Logger and LogLevel: the level follows log_level across reloads.
	Logger   *slog.Logger
	LogLevel *slog.LevelVar
	// Load reads the config file again, for reloads. Nil disables reload.
	Load func() (*config.Config, error)
}

// NewLogger makes the logger the config asks for. Its level is held in the
// returned LevelVar, so a reload can change it.
func NewLogger(g config.Global, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	lv := new(slog.LevelVar)
	lv.Set(g.LogLevel)
	opts := &slog.HandlerOptions{Level: lv}
	if g.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), lv
	}
	return slog.New(slog.NewTextHandler(w, opts)), lv
}

// New builds the pools and event loops for cfg. Nothing listens until
// Start.
func New(cfg *config.Config, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.LogLevel == nil {
		opts.LogLevel = new(slog.LevelVar)
	}
	engine, err := l4.New(l4.Options{Loops: cfg.Global.Workers, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	s := &Server{log: opts.Logger, logLevel: opts.LogLevel, load: opts.Load, engine: engine, cfg: cfg,
		pools: map[string]*pool.Pool{}, listeners: map[string]*l4.Listener{}, http: map[string]*httpListener{},
		metricsReg: &metrics.ReloadCounters{}}
	pools, err := s.buildPools(cfg, nil)
	if err != nil {
		engine.Close()
		return nil, err
	}
	s.pools = pools
	if err := s.loadState(); err != nil {
		s.log.Warn("state file not applied", "file", cfg.Global.StateFile, "err", err)
	}
	return s, nil
}

// buildPools makes the pools of cfg, carrying backends over from prev.
func (s *Server) buildPools(cfg *config.Config, prev map[string]*pool.Pool) (map[string]*pool.Pool, error) {
	// Per-loop state in a pool is the event loops'; the http listeners
	// pick and count through the pool's shared pickers and counters.
	popts := pool.Options{Loops: s.engine.Loops(), Logger: s.log, OnDisable: s.engine.CloseBackend}
	out := map[string]*pool.Pool{}
	for _, pc := range cfg.Pools {
		p, err := pool.New(poolSpec(pc), popts, prev[pc.Name])
		if err != nil {
			for _, q := range out {
				q.Close()
			}
			return nil, err
		}
		out[pc.Name] = p
	}
	return out, nil
}

func poolSpec(pc config.Pool) pool.Spec {
	spec := pool.Spec{
		Name:            pc.Name,
		Algorithm:       pc.Algorithm,
		Hash:            pc.Hash,
		MaglevTableSize: pc.MaglevTableSize,
		PassiveFailures: pc.PassiveFailures,
		HealthCheck:     pc.HealthCheck,
	}
	for _, b := range pc.Backends {
		spec.Backends = append(spec.Backends, pool.BackendSpec{Name: b.Name, Address: b.Address, Weight: b.Weight, MaxConnections: b.MaxConnections})
	}
	return spec
}

func listenerConfig(lc config.Listener, pools map[string]*pool.Pool) l4.ListenerConfig {
	var pv l4.ProxyVersion
	switch lc.ProxyProtocol {
	case config.ProxyProtocolV1:
		pv = l4.ProxyV1
	case config.ProxyProtocolV2:
		pv = l4.ProxyV2
	}
	return l4.ListenerConfig{
		Name:            lc.Name,
		Bind:            lc.Bind,
		Pool:            pools[lc.Pool],
		ProxyProtocol:   pv,
		AcceptProxy:     lc.AcceptProxyProtocol,
		TrustedProxies:  lc.TrustedProxies,
		MaxConnections:  lc.MaxConnections,
		ConnectTimeout:  lc.ConnectTimeout,
		IdleTimeout:     lc.IdleTimeout,
		Retries:         lc.Retries,
		UDP:             lc.Protocol == config.ProtocolUDP,
		UDPMaxFlows:     lc.UDPMaxFlows,
		UDPResponses:    lc.UDPResponses,
		UDPReuseSockets: lc.UDPReuseSockets,
		UDPReplyTimeout: lc.UDPReplyTimeout,
	}
}

// Start runs the event loops and binds every listener, the metrics
// endpoint and the admin socket. When it returns nil, every listener
// accepts.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.engine.Start()
	s.awaitHealth(s.cfg, s.pools)
	verifiers, err := buildVerifiers(s.cfg)
	if err != nil {
		s.stopLocked()
		return err
	}
	for _, lc := range s.cfg.Listeners {
		if lc.Protocol == config.ProtocolHTTP {
			c, err := s.l7Config(lc, s.pools, verifiers)
			var h *httpListener
			if err == nil {
				h, err = s.startHTTP(lc, c)
			}
			if err != nil {
				s.stopLocked()
				return err
			}
			s.http[lc.Name] = h
			s.log.Info("listening", "listener", lc.Name, "bind", h.Addr(), "protocol", lc.Protocol, "routes", len(lc.Routes), "tls", lc.TLSCertFile != "")
			continue
		}
		ln, err := s.engine.Listen(listenerConfig(lc, s.pools))
		if err != nil {
			s.stopLocked()
			return err
		}
		s.listeners[lc.Name] = ln
		s.log.Info("listening", "listener", lc.Name, "bind", ln.Addr().String(), "protocol", lc.Protocol, "pool", lc.Pool, "loops", s.engine.Loops())
	}
	if err := s.startMetricsLocked(s.cfg.Global.MetricsListen); err != nil {
		s.stopLocked()
		return err
	}
	if err := s.startAdminLocked(s.cfg.Global.AdminSocket); err != nil {
		s.stopLocked()
		return err
	}
	s.started = time.Now()
	return nil
}

func (s *Server) startMetricsLocked(addr string) error {
	if addr == "" {
		return nil
	}
	m, err := metrics.Listen(addr, metrics.Registry(s, s.metricsReg))
	if err != nil {
		return fmt.Errorf("metrics_listen %s: %w", addr, err)
	}
	s.metrics = m
	s.log.Info("serving metrics", "addr", m.Addr().String())
	return nil
}

func (s *Server) startAdminLocked(path string) error {
	if path == "" {
		return nil
	}
	a, err := admin.Listen(path, s, s.log)
	if err != nil {
		return fmt.Errorf("admin_socket %s: %w", path, err)
	}
	s.admin = a
	return nil
}

// awaitHealth waits, at most one probe timeout per pool, for the first
// probe of every new backend, so that listeners open (or take a new pool)
// with the backends' health known.
func (s *Server) awaitHealth(cfg *config.Config, pools map[string]*pool.Pool) {
	for _, pc := range cfg.Pools {
		p := pools[pc.Name]
		t := time.NewTimer(pc.HealthCheck.Timeout + 50*time.Millisecond)
		select {
		case <-p.Ready():
		case <-t.C:
			s.log.Warn("first health checks still running; going on", "pool", pc.Name)
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

// Engine is the data plane.
func (s *Server) Engine() *l4.Engine { return s.engine }

// Shutdown stops accepting at once, lets open connections finish until ctx
// is done, then closes the rest.
func (s *Server) Shutdown(ctx context.Context) error {
	// No reload may run into a stopping engine.
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.log.Info("shutting down", "active_connections", s.engine.Active())
	s.mu.Lock()
	s.stopSideServicesLocked()
	https := s.takeHTTPLocked()
	s.mu.Unlock()
	// The http listeners and the layer-4 engine stop accepting and drain
	// side by side: a WebSocket held open on one must not use up the
	// others' time, nor let them go on accepting meanwhile.
	httpDone := make(chan struct{})
	go func() {
		stopHTTP(ctx, https)
		close(httpDone)
	}()
	err := s.engine.Shutdown(ctx)
	<-httpDone
	s.mu.Lock()
	s.closePoolsLocked()
	s.mu.Unlock()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		s.log.Warn("shutdown timeout: closed remaining connections")
		return nil
	}
	return err
}

// Close stops everything at once.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopLocked()
}

func (s *Server) stopLocked() {
	s.stopSideServicesLocked()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	stopHTTP(ctx, s.takeHTTPLocked())
	s.engine.Close()
	s.closePoolsLocked()
}

func (s *Server) stopSideServicesLocked() {
	if s.admin != nil {
		s.admin.Close()
		s.admin = nil
	}
	if s.metrics != nil {
		s.metrics.Close()
		s.metrics = nil
	}
}

func (s *Server) closePoolsLocked() {
	for _, p := range s.pools {
		p.Close()
	}
}

// ShutdownTimeout is the current config's shutdown_timeout.
func (s *Server) ShutdownTimeout() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Global.ShutdownTimeout
}

// MetricsListeners implements metrics.Source.
func (s *Server) MetricsListeners() []metrics.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]metrics.Listener, 0, len(s.listeners))
	for name, ln := range s.listeners {
		conns, rej := ln.Totals()
		m := metrics.Listener{Name: name, Connections: conns, Active: ln.Active(), Rejected: map[string]uint64{}}
		if ln.UDP() {
			toB, toC, dropped := ln.UDPTotals()
			m.UDP = &metrics.UDP{ToBackend: toB, ToClient: toC, Dropped: map[string]uint64{}}
			for i, reason := range l4.DropReasons {
				m.UDP.Dropped[reason] = dropped[i]
			}
		} else {
			for i, reason := range l4.RejectReasons {
				m.Rejected[reason] = rej[i]
			}
		}
		out = append(out, m)
	}
	for name, h := range s.http {
		srv := h.Server()
		out = append(out, metrics.Listener{Name: name, Connections: h.Accepted(), Active: int64(srv.OpenConnections()),
			Rejected: map[string]uint64{"max_connections": srv.RejectedConnections(), "proxy_header": h.ProxyRejected()}})
	}
	return out
}

// MetricsHTTP implements metrics.Source: per route, and the listener's
// refusals before routing under route "".
func (s *Server) MetricsHTTP() []metrics.HTTPRoute {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []metrics.HTTPRoute
	for name, h := range s.http {
		st := h.Server().Stats()
		routed := map[string]uint64{}
		for _, r := range st.Routes {
			m := metrics.HTTPRoute{Listener: name, Route: r.Name, Requests: r.Requests, Rejected: r.Rejected,
				Count: r.Duration.Count, Sum: r.Duration.Sum, Buckets: map[float64]uint64{}}
			for i, le := range l7.DurationBuckets {
				m.Buckets[le] = r.Duration.Cumulative[i]
			}
			for reason, n := range r.Rejected {
				routed[reason] += n
			}
			out = append(out, m)
		}
		// What was refused before any route took it (no route, bad
		// framing) is the listener's total less the routes' share.
		unrouted := metrics.HTTPRoute{Listener: name, Route: "", Rejected: map[string]uint64{}}
		for reason, n := range st.Rejected {
			if n > routed[reason] {
				unrouted.Rejected[reason] = n - routed[reason]
			}
		}
		out = append(out, unrouted)
	}
	return out
}

// MetricsPools implements metrics.Source.
func (s *Server) MetricsPools() []metrics.Pool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []metrics.Pool
	for name, p := range s.pools {
		count, sum, cum := p.ConnectHistogram()
		m := metrics.Pool{Name: name, Count: count, Sum: sum, Buckets: map[float64]uint64{}}
		for i, le := range pool.ConnectBuckets {
			m.Buckets[le] = cum[i]
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
