package admin_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/admin/admintest"
)

func TestClient(t *testing.T) {
	ctx := context.Background()
	fake := admintest.Sample()
	c := admin.NewClient(admintest.Serve(t, fake))

	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := fake.Status(); !reflect.DeepEqual(st, want) {
		t.Errorf("Status = %+v, want %+v", st, want)
	}
	pools, err := c.Pools(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := fake.Pools(); !reflect.DeepEqual(pools, want) {
		t.Errorf("Pools = %+v, want %+v", pools, want)
	}
	p, err := c.Pool(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "db" || len(p.Backends) != 1 || p.Backends[0].Name != "pg-primary" {
		t.Errorf("Pool(db) = %+v", p)
	}
	b, err := c.Backend(ctx, "web", "10.0.1.3:8080")
	if err != nil {
		t.Fatal(err)
	}
	if b.Weight != 50 || b.Health != "down" {
		t.Errorf("Backend by address = %+v", b)
	}

	steps := []struct {
		desc      string
		call      func() (admin.Backend, error)
		wantState string
		wantW     int
	}{
		{"drain", func() (admin.Backend, error) { return c.Drain(ctx, "web", "web-2") }, "draining", 100},
		{"weight", func() (admin.Backend, error) { return c.SetWeight(ctx, "web", "web-2", 250) }, "draining", 250},
		{"disable", func() (admin.Backend, error) { return c.Disable(ctx, "web", "web-2") }, "disabled", 250},
		{"enable", func() (admin.Backend, error) { return c.Enable(ctx, "web", "web-2") }, "active", 250},
	}
	for _, s := range steps {
		b, err := s.call()
		if err != nil {
			t.Fatalf("%s: %v", s.desc, err)
		}
		if b.Pool != "web" || b.Name != "web-2" || b.State != s.wantState || b.Weight != s.wantW {
			t.Errorf("%s: answer %+v, want state %s weight %d", s.desc, b, s.wantState, s.wantW)
		}
	}

	r, err := c.Reload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK || !r.At.Equal(time.Date(2025, 3, 1, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("Reload = %+v", r)
	}
}

// TestClientEscapesNames: names travel as single path segments whatever
// they hold, IPv6 addresses and slashes included.
func TestClientEscapesNames(t *testing.T) {
	ctx := context.Background()
	fake := admintest.New(admin.Status{}, []admin.Pool{{Name: "a/b c", Backends: []admin.Backend{
		{Pool: "a/b c", Name: "[::1]:80", Address: "[::1]:80", State: "active", Weight: 1},
		{Pool: "a/b c", Name: "x/../y?z#%", Address: "10.0.0.1:1", State: "active", Weight: 1},
	}}})
	c := admin.NewClient(admintest.Serve(t, fake))
	if p, err := c.Pool(ctx, "a/b c"); err != nil || len(p.Backends) != 2 {
		t.Errorf("Pool = %+v, %v", p, err)
	}
	for _, name := range []string{"[::1]:80", "x/../y?z#%"} {
		if b, err := c.Drain(ctx, "a/b c", name); err != nil || b.Name != name || b.State != "draining" {
			t.Errorf("Drain(%q) = %+v, %v", name, b, err)
		}
	}
}

func TestClientErrors(t *testing.T) {
	ctx := context.Background()
	fake := admintest.Sample()
	c := admin.NewClient(admintest.Serve(t, fake))
	tests := []struct {
		desc     string
		call     func() error
		status   int
		sentinel error
		msg      string
	}{
		{"unknown pool", func() error { _, err := c.Pool(ctx, "nope"); return err },
			404, admin.ErrNotFound, `pool "nope": not found`},
		{"unknown backend", func() error { _, err := c.Drain(ctx, "web", "nope"); return err },
			404, admin.ErrNotFound, `pool "web": backend "nope": not found`},
		{"weight out of range", func() error { _, err := c.SetWeight(ctx, "web", "web-1", 0); return err },
			400, admin.ErrInvalid, `weight 0 out of range 1..10000: invalid request`},
		{"reload rejected", func() error {
			fake.FailReloads("lbd.toml:3: bad")
			defer fake.FailReloads("")
			_, err := c.Reload(ctx)
			return err
		}, 422, admin.ErrReload, `reload failed: lbd.toml:3: bad`},
	}
	for _, tt := range tests {
		err := tt.call()
		apiErr, ok := errors.AsType[*admin.APIError](err)
		if !ok {
			t.Errorf("%s: error %v (%T), want *APIError", tt.desc, err, err)
			continue
		}
		if apiErr.Status != tt.status || apiErr.Message != tt.msg || err.Error() != tt.msg {
			t.Errorf("%s: %d %q, want %d %q", tt.desc, apiErr.Status, apiErr.Message, tt.status, tt.msg)
		}
		if !errors.Is(err, tt.sentinel) {
			t.Errorf("%s: errors.Is(%v, %v) = false", tt.desc, err, tt.sentinel)
		}
		if errors.Is(err, admin.ErrUnreachable) {
			t.Errorf("%s: a refusal reads as unreachable", tt.desc)
		}
	}
}

func TestClientUnreachable(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	private := filepath.Join(dir, "private.sock")
	if s, err := admin.Listen(private, admintest.Sample(), nil); err != nil {
		t.Fatal(err)
	} else {
		defer s.Close()
	}
	if err := os.Chmod(private, 0); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{
		"missing": filepath.Join(dir, "missing.sock"),
		"stale":   stale,
	}
	if os.Geteuid() != 0 { // root connects whatever the mode
		paths["no permission"] = private
	}
	for desc, path := range paths {
		_, err := admin.NewClient(path).Status(context.Background())
		if !errors.Is(err, admin.ErrUnreachable) {
			t.Errorf("%s: %v, want ErrUnreachable", desc, err)
			continue
		}
		if _, ok := errors.AsType[*admin.APIError](err); ok {
			t.Errorf("%s: unreachable reads as a refusal", desc)
		}
		want := "cannot reach lbd: dial unix " + path + ": connect: "
		if got := err.Error(); len(got) <= len(want) || got[:len(want)] != want {
			t.Errorf("%s: message %q, want it to start with %q", desc, got, want)
		}
	}
}

// TestClientNonJSONError: an error answer that is not an ErrorResponse
// still becomes an APIError with the body as its message.
func TestClientNonJSONError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "teapot here", http.StatusTeapot)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, err = admin.NewClient(path).Status(context.Background())
	apiErr, ok := errors.AsType[*admin.APIError](err)
	if !ok || apiErr.Status != http.StatusTeapot || apiErr.Message != "teapot here" {
		t.Errorf("error %#v, want APIError 418 teapot here", err)
	}
}
