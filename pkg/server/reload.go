package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/l4"
	"github.com/lbd-lb/lbd/pkg/l7"
	"github.com/lbd-lb/lbd/pkg/l7/auth"
	"github.com/lbd-lb/lbd/pkg/pool"
)

// errNoConfigFile refuses a reload of a config that did not come from a
// file.
var errNoConfigFile = errors.New("this lbd was not started from a config file")

// Reload re-reads the config file and applies it. An invalid config
// changes nothing. A valid one is applied so that no connection attempt is
// refused: a listener whose bind and protocol are unchanged keeps its
// sockets in every loop and only swaps its config; new listeners open
// before anything is committed, removed ones close last; pools are rebuilt
// with every unchanged backend carried over (counters, health, operator
// state), and open connections keep their backend until they end.
func (s *Server) Reload() (admin.Reload, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.notify("RELOADING=1\nMONOTONIC_USEC=" + monotonicUsec())
	defer s.notify("READY=1")

	rec := admin.Reload{At: time.Now()}
	err := errNoConfigFile
	var cfg *config.Config
	if s.load != nil {
		cfg, err = s.load()
		if err == nil {
			err = s.apply(cfg)
		}
	}
	if err != nil {
		rec.Error = err.Error()
		s.metricsReg.Failed()
		s.log.Error("reload failed; keeping the running config", "err", err)
		s.setLastReload(rec)
		return rec, fmt.Errorf("%w: %w", admin.ErrReload, err)
	}
	rec.OK = true
	s.metricsReg.Loaded(rec.At, true)
	s.setLastReload(rec)
	s.log.Info("config reloaded", "file", cfg.File, "listeners", len(cfg.Listeners), "pools", len(cfg.Pools))
	return rec, nil
}

func (s *Server) setLastReload(r admin.Reload) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastReload = &r
}

// bindKey is what a reload matches a running listener by: its configured
// bind and protocol, and, when the bind has port 0 (any port, as tests
// use), its name too, since such binds are not unique.
type bindKey struct {
	bind     netip.AddrPort
	protocol string
	name     string
}

func keyOf(bind netip.AddrPort, protocol, name string) bindKey {
	if bind.Port() != 0 {
		name = ""
	}
	return bindKey{bind, protocol, name}
}

// apply switches the running system to cfg. Everything that can fail is
// done before the commit point (prepareLocked), so a failure leaves the
// running config whole; commitLocked cannot fail.
func (s *Server) apply(cfg *config.Config) error {
	s.mu.Lock()
	old, oldPools := s.cfg, s.pools
	s.mu.Unlock()

	if cfg.Global.Workers != old.Global.Workers {
		s.log.Warn("workers changed; it takes effect at the next restart", "running", s.engine.Loops())
	}
	if cfg.Global.LogFormat != old.Global.LogFormat {
		s.log.Warn("log_format changed; it takes effect at the next restart")
	}

	pools, err := s.buildPools(cfg, oldPools)
	if err != nil {
		return err
	}
	verifiers, err := buildVerifiers(cfg)
	if err != nil {
		for _, p := range pools {
			p.Close()
		}
		return err
	}
	s.awaitHealth(cfg, pools)

	s.mu.Lock()
	defer s.mu.Unlock()
	pl := &plan{cfg: cfg, pools: pools}
	if err := s.prepareLocked(pl, old, verifiers); err != nil {
		pl.abandon(s)
		return err
	}
	s.commitLocked(pl, oldPools)
	return nil
}

// plan is a reload made ready: what opens, what changes and what closes
// once it is committed.
type plan struct {
	cfg   *config.Config
	pools map[string]*pool.Pool
	// running are the listeners that stay, by what a reload matches them
	// by; those left in the maps at the commit are removed.
	running     map[bindKey]*l4.Listener
	runningHTTP map[bindKey]*httpListener
	// opened are the listeners this reload opened, serving nothing of
	// the new config's until the commit (tcp and udp ones accept into
	// their pools, which only the commit activates).
	opened     []*l4.Listener
	openedHTTP []*httpListener
	next       map[string]*l4.Listener
	nextHTTP   map[string]*httpListener
	// httpUpdates are the changes of the http listeners that stay.
	httpUpdates []httpUpdate
}

type httpUpdate struct {
	h      *httpListener
	key    bindKey
	name   string
	change *l7.Change
}

// abandon undoes a plan that will not be committed: its listeners close
// and its pools go.
func (pl *plan) abandon(s *Server) {
	for _, ln := range pl.opened {
		s.engine.CloseListener(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, h := range pl.openedHTTP {
		h.Stop(ctx)
	}
	for _, p := range pl.pools {
		p.Close()
	}
}

// prepareLocked does everything of a reload that can fail: opens the new
// listeners, checks and readies the changes of the others, and moves the
// side services whose address changed.
func (s *Server) prepareLocked(pl *plan, old *config.Config, verifiers map[string]*auth.Verifier) error {
	cfg := pl.cfg
	pl.running = map[bindKey]*l4.Listener{}
	for _, ln := range s.listeners {
		proto := config.ProtocolTCP
		if ln.UDP() {
			proto = config.ProtocolUDP
		}
		pl.running[keyOf(ln.Config().Bind, proto, ln.Config().Name)] = ln
	}
	pl.runningHTTP = map[bindKey]*httpListener{}
	for _, h := range s.http {
		pl.runningHTTP[keyOf(h.bind, config.ProtocolHTTP, h.name)] = h
	}
	pl.nextHTTP = map[string]*httpListener{}
	for _, lc := range cfg.Listeners {
		if lc.Protocol != config.ProtocolHTTP {
			continue
		}
		c, err := s.l7Config(lc, pl.pools, verifiers)
		if err != nil {
			return err
		}
		k := keyOf(lc.Bind, config.ProtocolHTTP, lc.Name)
		h := pl.runningHTTP[k]
		if h == nil {
			nh, err := s.startHTTP(lc, c)
			if err != nil {
				return err
			}
			pl.openedHTTP = append(pl.openedHTTP, nh)
			pl.nextHTTP[lc.Name] = nh
			continue
		}
		// A successor server, when the change needs one, serves nothing
		// until the commit.
		change, err := h.Prepare(c)
		if err != nil {
			return err
		}
		pl.httpUpdates = append(pl.httpUpdates, httpUpdate{h: h, key: k, name: lc.Name, change: change})
	}
	pl.next = map[string]*l4.Listener{}
	for _, lc := range cfg.Listeners {
		if lc.Protocol == config.ProtocolHTTP || pl.running[keyOf(lc.Bind, lc.Protocol, lc.Name)] != nil {
			continue
		}
		ln, err := s.engine.Listen(listenerConfig(lc, pl.pools))
		if err != nil {
			return err
		}
		pl.opened = append(pl.opened, ln)
		pl.next[lc.Name] = ln
	}
	// Side services move only when their address changed.
	if cfg.Global.MetricsListen != old.Global.MetricsListen || cfg.Global.AdminSocket != old.Global.AdminSocket {
		if err := s.moveSideServicesLocked(old.Global, cfg.Global); err != nil {
			return err
		}
	}
	return nil
}

// commitLocked switches to a prepared plan. Nothing here fails.
func (s *Server) commitLocked(pl *plan, oldPools map[string]*pool.Pool) {
	cfg := pl.cfg
	for _, u := range pl.httpUpdates {
		u.h.Apply(u.change, cfg.Global.ShutdownTimeout)
		u.h.name = u.name
		pl.nextHTTP[u.name] = u.h
		delete(pl.runningHTTP, u.key)
	}
	for _, h := range pl.runningHTTP {
		s.log.Info("listener removed", "listener", h.name, "bind", h.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Global.ShutdownTimeout)
		go func() {
			defer cancel()
			h.Stop(ctx)
		}()
	}
	s.http = pl.nextHTTP
	for _, lc := range cfg.Listeners {
		if lc.Protocol == config.ProtocolHTTP {
			continue
		}
		k := keyOf(lc.Bind, lc.Protocol, lc.Name)
		if ln := pl.running[k]; ln != nil {
			if err := s.engine.Update(ln, listenerConfig(lc, pl.pools)); err != nil {
				// Only a bind change fails, and the key rules it out.
				s.log.Error("listener update", "listener", lc.Name, "err", err)
			}
			pl.next[lc.Name] = ln
			delete(pl.running, k)
		}
	}
	for _, ln := range pl.running {
		s.log.Info("listener removed", "listener", ln.Config().Name, "bind", ln.Addr().String())
		s.engine.CloseListener(ln)
	}
	for _, ln := range pl.opened {
		s.log.Info("listening", "listener", ln.Config().Name, "bind", ln.Addr().String(), "pool", ln.Config().Pool.Name())
	}
	s.cfg, s.pools, s.listeners = cfg, pl.pools, pl.next
	s.logLevel.Set(cfg.Global.LogLevel)
	for _, p := range pl.pools {
		p.Activate()
	}
	for _, p := range oldPools {
		p.Close()
	}
	if err := s.saveStateLocked(); err != nil {
		s.log.Warn("state file not written", "file", cfg.Global.StateFile, "err", err)
	}
}

// moveSideServicesLocked rebinds the metrics endpoint and the admin socket
// whose addresses changed. The new ones are bound before the old ones
// close; on failure the old ones stay.
func (s *Server) moveSideServicesLocked(old, cur config.Global) error {
	oldMetrics, oldAdmin := s.metrics, s.admin
	if cur.MetricsListen != old.MetricsListen {
		s.metrics = nil
		if err := s.startMetricsLocked(cur.MetricsListen); err != nil {
			s.metrics = oldMetrics
			return err
		}
	}
	if cur.AdminSocket != old.AdminSocket {
		s.admin = nil
		if err := s.startAdminLocked(cur.AdminSocket); err != nil {
			if s.metrics != oldMetrics && s.metrics != nil {
				s.metrics.Close()
			}
			s.metrics, s.admin = oldMetrics, oldAdmin
			return err
		}
	}
	if s.metrics != oldMetrics && oldMetrics != nil {
		oldMetrics.Close()
	}
	if s.admin != oldAdmin && oldAdmin != nil {
		// The reload may have come through this very socket: give its
		// answer time to go out before closing the old one.
		time.AfterFunc(2*time.Second, func() { oldAdmin.Close() })
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd wants
// alongside RELOADING=1.
func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return strconv.FormatInt(ts.Sec*1e6+ts.Nsec/1e3, 10)
}
