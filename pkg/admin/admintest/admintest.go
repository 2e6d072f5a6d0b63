// Package admintest provides an in-memory admin.Controller and a helper that
// serves it on a real admin socket, for tests of the admin API's clients.
package admintest

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/pkg/admin"
)

// Weight bounds the Controller accepts, as lbd's config does.
const (
	MinWeight = 1
	MaxWeight = 10000
)

// Controller is an in-memory admin.Controller over fixed pools. Drain,
// enable, disable and weight change its backends as lbd would; nothing
// carries traffic, so active counts move only by SetDrainStep.
type Controller struct {
	mu        sync.Mutex
	status    admin.Status
	pools     []admin.Pool
	reloadErr string
	drainStep int64
	calls     map[string]int
}

var _ admin.Controller = (*Controller)(nil)

// New returns a Controller that answers with copies of status and pools.
func New(status admin.Status, pools []admin.Pool) *Controller {
	c := &Controller{status: status, calls: map[string]int{}}
	c.status.Listeners = slices.Clone(status.Listeners)
	for _, p := range pools {
		p.Backends = slices.Clone(p.Backends)
		c.pools = append(c.pools, p)
	}
	return c
}

// Sample returns a Controller over a fixed daemon: two pools, "web" with
// three backends (one named by its address) and "db" with one, two
// listeners, started 2025-03-01 12:00 UTC, never reloaded.
func Sample() *Controller {
	started := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return New(admin.Status{
		Version:    "1.2.3",
		StartedAt:  started,
		Uptime:     "3h25m7s",
		ConfigFile: "/etc/lbd/lbd.toml",
		Listeners: []admin.ListenerStatus{
			{Name: "http", Bind: "0.0.0.0:80", Protocol: "tcp", Pool: "web", ActiveConnections: 12, TotalConnections: 48211},
			{Name: "postgres", Bind: "10.0.0.1:5432", Protocol: "tcp", Pool: "db", ActiveConnections: 3, TotalConnections: 97},
		},
	}, []admin.Pool{
		{Name: "web", Algorithm: "wrr", Backends: []admin.Backend{
			{Pool: "web", Name: "web-1", Address: "10.0.1.1:8080", State: "active", Health: "up", Weight: 100, ActiveConnections: 5, TotalConnections: 20110},
			{Pool: "web", Name: "web-2", Address: "10.0.1.2:8080", State: "active", Health: "up", Weight: 100, ActiveConnections: 7, TotalConnections: 20093},
			{Pool: "web", Name: "10.0.1.3:8080", Address: "10.0.1.3:8080", State: "active", Health: "down", Weight: 50, ActiveConnections: 0, TotalConnections: 8008},
		}},
		{Name: "db", Algorithm: "least_conn", Backends: []admin.Backend{
			{Pool: "db", Name: "pg-primary", Address: "10.0.2.1:5432", State: "active", Health: "up", Weight: 100, ActiveConnections: 3, TotalConnections: 97},
		}},
	})
}

// Serve serves c on an admin socket in a fresh temporary directory until
// the test ends, and returns the socket's path.
func Serve(t testing.TB, c admin.Controller) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	s, err := admin.Listen(path, c, nil)
	if err != nil {
		t.Fatalf("admin.Listen: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("admin server Close: %v", err)
		}
	})
	return path
}

// FailReloads makes every later Reload fail with msg, wrapped in
// admin.ErrReload; an empty msg makes them succeed again.
func (c *Controller) FailReloads(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reloadErr = msg
}

// SetDrainStep makes each Backend call on a draining backend lower its
// active connections by n (not below 0), as if they were closing between
// polls. 0, the default, leaves them open.
func (c *Controller) SetDrainStep(n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drainStep = n
}

// Calls reports how often the named Controller method has been called.
func (c *Controller) Calls(method string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[method]
}

// Status implements admin.Controller.
func (c *Controller) Status() admin.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls["Status"]++
	s := c.status
	s.Listeners = slices.Clone(s.Listeners)
	if s.LastReload != nil {
		r := *s.LastReload
		s.LastReload = &r
	}
	return s
}

// Pools implements admin.Controller.
func (c *Controller) Pools() []admin.Pool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls["Pools"]++
	var out []admin.Pool
	for _, p := range c.pools {
		p.Backends = slices.Clone(p.Backends)
		out = append(out, p)
	}
	return out
}

// Pool implements admin.Controller.
func (c *Controller) Pool(name string) (admin.Pool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls["Pool"]++
	p, err := c.pool(name)
	if err != nil {
		return admin.Pool{}, err
	}
	out := *p
	out.Backends = slices.Clone(p.Backends)
	return out, nil
}

// Backend implements admin.Controller.
func (c *Controller) Backend(pool, backend string) (admin.Backend, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls["Backend"]++
	b, err := c.backend(pool, backend)
	if err != nil {
		return admin.Backend{}, err
	}
	if b.State == "draining" {
		b.ActiveConnections = max(0, b.ActiveConnections-c.drainStep)
	}
	return *b, nil
}

// Drain implements admin.Controller.
func (c *Controller) Drain(pool, backend string) error {
	return c.change("Drain", pool, backend, func(b *admin.Backend) { b.State = "draining" })
}

// Enable implements admin.Controller.
func (c *Controller) Enable(pool, backend string) error {
	return c.change("Enable", pool, backend, func(b *admin.Backend) { b.State = "active" })
}

// Disable implements admin.Controller. Like lbd, it closes the backend's
// open connections.
func (c *Controller) Disable(pool, backend string) error {
	return c.change("Disable", pool, backend, func(b *admin.Backend) {
		b.State = "disabled"
		b.ActiveConnections = 0
	})
}

// SetWeight implements admin.Controller. Weights outside
// MinWeight..MaxWeight are refused with admin.ErrInvalid.
func (c *Controller) SetWeight(pool, backend string, weight int) error {
	if weight < MinWeight || weight > MaxWeight {
		c.mu.Lock()
		c.calls["SetWeight"]++
		c.mu.Unlock()
		return fmt.Errorf("weight %d out of range %d..%d: %w", weight, MinWeight, MaxWeight, admin.ErrInvalid)
	}
	return c.change("SetWeight", pool, backend, func(b *admin.Backend) { b.Weight = weight })
}

// Reload implements admin.Controller. It succeeds unless FailReloads set a
// message; either way it is recorded as the last reload, at one hour past
// the start so that answers stay reproducible.
func (c *Controller) Reload() (admin.Reload, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls["Reload"]++
	r := admin.Reload{At: c.status.StartedAt.Add(time.Hour), OK: c.reloadErr == "", Error: c.reloadErr}
	c.status.LastReload = &r
	if !r.OK {
		return r, fmt.Errorf("%w: %s", admin.ErrReload, c.reloadErr)
	}
	return r, nil
}

func (c *Controller) change(method, pool, backend string, f func(*admin.Backend)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[method]++
	b, err := c.backend(pool, backend)
	if err != nil {
		return err
	}
	f(b)
	return nil
}

func (c *Controller) pool(name string) (*admin.Pool, error) {
	for i := range c.pools {
		if c.pools[i].Name == name {
			return &c.pools[i], nil
		}
	}
	return nil, fmt.Errorf("pool %q: %w", name, admin.ErrNotFound)
}

func (c *Controller) backend(pool, backend string) (*admin.Backend, error) {
	p, err := c.pool(pool)
	if err != nil {
		return nil, err
	}
	for i := range p.Backends {
		if p.Backends[i].Name == backend {
			return &p.Backends[i], nil
		}
	}
	return nil, fmt.Errorf("pool %q: backend %q: %w", pool, backend, admin.ErrNotFound)
}
