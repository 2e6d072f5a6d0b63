package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/admin/admintest"
	"github.com/lbd-lb/lbd/pkg/version"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

type result struct {
	code           int
	stdout, stderr string
}

// lbctl runs the CLI against the admin socket at socket, given through
// LBCTL_SOCKET, with stdout a terminal when tty is set.
func lbctl(socket string, tty bool, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr, env{
		getenv: func(k string) string {
			if k == "LBCTL_SOCKET" {
				return socket
			}
			return ""
		},
		isTerminal:   func(io.Writer) bool { return tty },
		pollInterval: time.Millisecond,
	})
	return result{code, stdout.String(), stderr.String()}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestTable pins each command's table output in a golden file.
func TestTable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*admintest.Controller)
		tty   bool
		args  []string
	}{
		{name: "status", args: []string{"status"}},
		{name: "status_reloaded", setup: func(c *admintest.Controller) { c.Reload() }, args: []string{"status"}},
		{name: "status_reload_failed", setup: func(c *admintest.Controller) {
			c.FailReloads("lbd.toml:12: pool \"web\": unknown algorithm \"rnd\"\nlbd.toml:20: listener \"http\": pool \"nope\" does not exist")
			c.Reload()
		}, args: []string{"status"}},
		{name: "backends", args: []string{"backends"}},
		{name: "backends_pool", args: []string{"backends", "db"}},
		{name: "drain", args: []string{"drain", "web", "web-1"}},
		{name: "drain_wait", setup: func(c *admintest.Controller) { c.SetDrainStep(2) }, args: []string{"drain", "web", "web-2", "--wait"}},
		{name: "drain_wait_tty", setup: func(c *admintest.Controller) { c.SetDrainStep(2) }, tty: true, args: []string{"drain", "--wait", "web", "web-2", "--timeout", "1h"}},
		{name: "drain_no_connections_tty", tty: true, args: []string{"drain", "web", "10.0.1.3:8080", "--wait"}},
		{name: "enable", setup: func(c *admintest.Controller) { c.Disable("web", "web-1") }, args: []string{"enable", "web", "web-1"}},
		{name: "disable", args: []string{"disable", "db", "pg-primary"}},
		{name: "weight", args: []string{"weight", "web", "10.0.1.3:8080", "300"}},
		{name: "reload", args: []string{"reload"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := admintest.Sample()
			if tt.setup != nil {
				tt.setup(fake)
			}
			r := lbctl(admintest.Serve(t, fake), tt.tty, tt.args...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			golden(t, tt.name, r.stdout)
		})
	}
}

// TestJSON decodes each command's -o json output and compares it with what
// the same call gives on a Controller of its own.
func TestJSON(t *testing.T) {
	must := func(v any, err error) any {
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		desc string
		args []string
		want func(c *admintest.Controller) any
	}{
		{"status", []string{"status"}, func(c *admintest.Controller) any { return c.Status() }},
		{"backends", []string{"backends"}, func(c *admintest.Controller) any { return c.Pools() }},
		{"backends pool", []string{"backends", "web"}, func(c *admintest.Controller) any { return must(c.Pool("web")) }},
		{"drain", []string{"drain", "web", "web-1"}, func(c *admintest.Controller) any {
			c.Drain("web", "web-1")
			return must(c.Backend("web", "web-1"))
		}},
		{"enable", []string{"enable", "web", "web-1"}, func(c *admintest.Controller) any {
			c.Enable("web", "web-1")
			return must(c.Backend("web", "web-1"))
		}},
		{"disable", []string{"disable", "web", "web-1"}, func(c *admintest.Controller) any {
			c.Disable("web", "web-1")
			return must(c.Backend("web", "web-1"))
		}},
		{"weight", []string{"weight", "web", "web-1", "42"}, func(c *admintest.Controller) any {
			c.SetWeight("web", "web-1", 42)
			return must(c.Backend("web", "web-1"))
		}},
		{"reload", []string{"reload"}, func(c *admintest.Controller) any { return must(c.Reload()) }},
		{"version", []string{"version"}, func(*admintest.Controller) any {
			return map[string]any{"version": version.Version}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			want := tt.want(admintest.Sample())
			r := lbctl(admintest.Serve(t, admintest.Sample()), false, append([]string{"-o", "json"}, tt.args...)...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			if !strings.Contains(r.stdout, "\n  ") {
				t.Errorf("JSON not indented:\n%s", r.stdout)
			}
			got := reflect.New(reflect.TypeOf(want))
			if err := unmarshalStrict(r.stdout, got.Interface()); err != nil {
				t.Fatalf("decoding %s: %v", r.stdout, err)
			}
			if !reflect.DeepEqual(got.Elem().Interface(), want) {
				t.Errorf("got %+v\nwant %+v", got.Elem().Interface(), want)
			}
		})
	}
}

// TestExitCodes pins lbctl's exit codes (docs/reference.md): 1 when lbd refuses, 2 on bad usage or
// when lbd cannot be reached, with the reason on stderr.
func TestExitCodes(t *testing.T) {
	tests := []struct {
		desc   string
		socket string // "" for the running fake
		args   []string
		code   int
		stderr string
	}{
		{"unknown pool", "", []string{"backends", "nope"}, 1, `lbctl: pool "nope": not found`},
		{"unknown backend drain", "", []string{"drain", "web", "nope"}, 1, `lbctl: pool "web": backend "nope": not found`},
		{"unknown backend wait", "", []string{"drain", "web", "nope", "--wait"}, 1, `backend "nope": not found`},
		{"unknown backend enable", "", []string{"enable", "web", "nope"}, 1, `not found`},
		{"unknown pool disable", "", []string{"disable", "nope", "web-1"}, 1, `pool "nope": not found`},
		{"unknown backend weight", "", []string{"weight", "web", "nope", "5"}, 1, `not found`},
		{"weight out of range", "", []string{"weight", "web", "web-1", "0"}, 1, `out of range`},
		{"weight not an integer", "", []string{"weight", "web", "web-1", "heavy"}, 2, `weight "heavy" is not an integer`},
		{"weight negative reads as a flag", "", []string{"weight", "web", "web-1", "-5"}, 2, `unknown shorthand flag`},
		{"weight missing N", "", []string{"weight", "web", "web-1"}, 2, `weight takes POOL, BACKEND and N, got 2 argument(s)`},
		{"drain missing backend", "", []string{"drain", "web"}, 2, `Run 'lbctl drain --help' for usage.`},
		{"backends two pools", "", []string{"backends", "web", "db"}, 2, `at most one argument`},
		{"status with an argument", "", []string{"status", "x"}, 2, `status takes no arguments`},
		{"bad output", "", []string{"-o", "yaml", "status"}, 2, `invalid output format "yaml": want table or json`},
		{"bad flag", "", []string{"status", "--bogus"}, 2, `unknown flag: --bogus`},
		{"bad duration", "", []string{"drain", "web", "web-1", "--wait", "--timeout", "soon"}, 2, `invalid argument "soon"`},
		{"negative timeout", "", []string{"drain", "web", "web-1", "--wait", "--timeout", "-1s"}, 2, `must not be negative`},
		{"timeout without wait", "", []string{"drain", "web", "web-1", "--timeout", "1s"}, 2, `--timeout needs --wait`},
		{"unknown command", "", []string{"explode"}, 2, `unknown command "explode"`},
		{"unreachable status", "missing", []string{"status"}, 2, `lbctl: cannot reach lbd: dial unix `},
		{"unreachable drain", "missing", []string{"drain", "web", "web-1", "--wait"}, 2, `cannot reach lbd`},
		{"unreachable reload", "missing", []string{"reload"}, 2, `no such file or directory`},
	}
	socket := admintest.Serve(t, admintest.Sample())
	missing := filepath.Join(t.TempDir(), "missing.sock")
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			s := socket
			if tt.socket == "missing" {
				s = missing
			}
			r := lbctl(s, false, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("stderr %q does not contain %q", r.stderr, tt.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := lbctl("", false, "version")
	if want := "lbctl " + version.Version + "\n"; r.code != 0 || r.stdout != want {
		t.Errorf("exit %d, stdout %q; want 0 and %q", r.code, r.stdout, want)
	}
}

func TestReloadRejected(t *testing.T) {
	fake := admintest.Sample()
	fake.FailReloads("lbd.toml:12: pool \"web\": unknown algorithm \"rnd\"")
	socket := admintest.Serve(t, fake)
	for _, output := range []string{"table", "json"} {
		r := lbctl(socket, false, "reload", "-o", output)
		want := "lbctl: reload failed: lbd.toml:12: pool \"web\": unknown algorithm \"rnd\"\n"
		if r.code != 1 || r.stderr != want || r.stdout != "" {
			t.Errorf("-o %s: exit %d, stdout %q, stderr %q; want 1 and %q", output, r.code, r.stdout, r.stderr, want)
		}
	}
}

// TestDrainWait: drain --wait polls until the active count reaches 0 and
// returns at once then, however long --timeout is.
func TestDrainWait(t *testing.T) {
	fake := admintest.Sample()
	fake.SetDrainStep(1)
	r := lbctl(admintest.Serve(t, fake), false, "-o", "json", "drain", "web", "web-2", "--wait", "--timeout", "1h")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	var b admin.Backend
	if err := unmarshalStrict(r.stdout, &b); err != nil {
		t.Fatal(err)
	}
	if b.ActiveConnections != 0 || b.State != "draining" {
		t.Errorf("final backend %+v, want draining with 0 active", b)
	}
	// web-2 has 7 connections and loses one per Backend call: one in the
	// drain's answer, then one per poll until 0, and no poll after.
	if got := fake.Calls("Backend"); got != 7 {
		t.Errorf("%d Backend calls, want 7", got)
	}
}

func TestDrainWaitTimeout(t *testing.T) {
	fake := admintest.Sample() // connections never close
	r := lbctl(admintest.Serve(t, fake), true, "drain", "web", "web-1", "--wait", "--timeout", "30ms")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	if want := "lbctl: timed out after 30ms: web/web-1 still has 5 active connections\n"; r.stderr != want {
		t.Errorf("stderr %q, want %q", r.stderr, want)
	}
	// The progress line is erased, and nothing else printed.
	if !strings.HasSuffix(r.stdout, clearLine) || strings.Contains(r.stdout, "\n") {
		t.Errorf("stdout %q, want progress lines ending erased", r.stdout)
	}
	if fake.Calls("Drain") != 1 {
		t.Errorf("%d Drain calls, want 1", fake.Calls("Drain"))
	}
}

// reenabling enables every backend it is asked about, as an operator
// undoing a drain from another terminal would.
type reenabling struct{ *admintest.Controller }

func (c reenabling) Backend(pool, backend string) (admin.Backend, error) {
	c.Enable(pool, backend)
	return c.Controller.Backend(pool, backend)
}

func TestDrainWaitEnabledAgain(t *testing.T) {
	r := lbctl(admintest.Serve(t, reenabling{admintest.Sample()}), false, "drain", "web", "web-1", "--wait")
	if want := "lbctl: web/web-1: no longer draining (enabled again) with 5 active connections\n"; r.code != 1 || r.stderr != want {
		t.Errorf("exit %d, stderr %q; want 1 and %q", r.code, r.stderr, want)
	}
}

// TestSocketFlag: --socket overrides LBCTL_SOCKET, and without either
// lbctl calls /run/lbd/admin.sock.
func TestSocketFlag(t *testing.T) {
	socket := admintest.Serve(t, admintest.Sample())
	r := lbctl(filepath.Join(t.TempDir(), "wrong.sock"), false, "--socket", socket, "status")
	if r.code != 0 {
		t.Errorf("--socket: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Lstat(defaultSocket); err == nil {
		t.Skipf("%s exists; not probing the default", defaultSocket)
	}
	r = lbctl("", false, "status")
	if r.code != 2 || !strings.Contains(r.stderr, "dial unix "+defaultSocket) {
		t.Errorf("default socket: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestHelpExamples: every command's --help shows an example.
func TestHelpExamples(t *testing.T) {
	root := (&cli{env: env{getenv: func(string) string { return "" }}}).rootCommand()
	var walk func(*cobra.Command)
	var names []string
	walk = func(cmd *cobra.Command) {
		names = append(names, cmd.CommandPath())
		if cmd.Example == "" {
			t.Errorf("%s has no Example", cmd.CommandPath())
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
	want := []string{"lbctl", "lbctl backends", "lbctl disable", "lbctl drain", "lbctl enable",
		"lbctl help", "lbctl reload", "lbctl status", "lbctl version", "lbctl weight"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("commands %v, want %v", names, want)
	}
	for _, name := range names {
		args := append(strings.Fields(name)[1:], "--help")
		r := lbctl("", false, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Examples:\n  lbctl") {
			t.Errorf("%s --help: exit %d, output:\n%s", name, r.code, r.stdout)
		}
	}
}

func TestExitCodeMapping(t *testing.T) {
	tests := []struct {
		desc string
		err  error
		want int
	}{
		{"refusal", &admin.APIError{Status: 404, Message: "x"}, 1},
		{"server error", &admin.APIError{Status: 500, Message: "x"}, 1},
		{"timeout", errTimeout, 1},
		{"unreachable", admin.ErrUnreachable, 2},
		{"usage", &usageError{err: errors.New("x")}, 2},
		{"other", errors.New("x"), 2},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("%s: exit %d, want %d", tt.desc, got, tt.want)
		}
	}
}
