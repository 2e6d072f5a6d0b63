// Package conftest builds lbd config files for tests. Every fixture that
// needs a whole config builds it here, so that it states only what it is
// about and takes the same test settings as the others: an admin socket in
// the test's own directory, no metrics endpoint, and binds that take a
// port the kernel chooses (AnyPort), read back from the running server.
// Only tests import it.
package conftest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// AnyPort is a loopback bind on a port the kernel chooses.
const AnyPort = "127.0.0.1:0"

// Raw is a value written as it is: an inline table such as
// `{ rate = 10.0 }`.
type Raw string

// Config is a config under construction.
type Config struct {
	dir    string
	global *Table
	tables []*Table
}

// Table is one table of a config: its keys in the order set, and the
// tables nested in it ([[listener.route]], [[pool.backend]],
// [pool.health_check]).
type Table struct {
	header string
	keys   []string
	vals   map[string]any
	sub    []*Table
}

// New starts a config whose admin socket is in a new directory of t's and
// whose metrics endpoint is off.
func New(t testing.TB) *Config {
	dir := t.TempDir()
	c := &Config{dir: dir, global: newTable("[global]")}
	c.global.Set("admin_socket", filepath.Join(dir, "admin.sock"), "metrics_listen", "")
	return c
}

func newTable(header string) *Table { return &Table{header: header, vals: map[string]any{}} }

// Dir is the directory the config's files go in.
func (c *Config) Dir() string { return c.dir }

// AdminSocket is the path of the config's admin socket.
func (c *Config) AdminSocket() string { return c.global.vals["admin_socket"].(string) }

// Global sets keys of [global], as key, value pairs.
func (c *Config) Global(kv ...any) *Config {
	c.global.Set(kv...)
	return c
}

// Listener adds a [[listener]] with its name and the given key, value
// pairs; a bind left out is AnyPort.
func (c *Config) Listener(name string, kv ...any) *Table {
	l := newTable("[[listener]]").Set("name", name, "bind", AnyPort).Set(kv...)
	c.tables = append(c.tables, l)
	return l
}

// Pool adds a [[pool]] with its name and the given key, value pairs.
func (c *Config) Pool(name string, kv ...any) *Table {
	p := newTable("[[pool]]").Set("name", name).Set(kv...)
	c.tables = append(c.tables, p)
	return p
}

// Auth adds an [[auth]] block with its name and the given key, value
// pairs.
func (c *Config) Auth(name string, kv ...any) *Table {
	a := newTable("[[auth]]").Set("name", name).Set(kv...)
	c.tables = append(c.tables, a)
	return a
}

// Set sets keys of the table, as key, value pairs; a key set again keeps
// its place and takes the new value, and a nil value removes it.
func (t *Table) Set(kv ...any) *Table {
	if len(kv)%2 != 0 {
		panic("conftest: keys and values must come in pairs")
	}
	for i := 0; i < len(kv); i += 2 {
		k := kv[i].(string)
		if kv[i+1] == nil {
			t.keys = slices.DeleteFunc(t.keys, func(s string) bool { return s == k })
			delete(t.vals, k)
			continue
		}
		if _, ok := t.vals[k]; !ok {
			t.keys = append(t.keys, k)
		}
		t.vals[k] = kv[i+1]
	}
	return t
}

// Route adds a [[listener.route]] to a listener.
func (t *Table) Route(kv ...any) *Table { return t.add("[[listener.route]]", kv) }

// Backend adds a [[pool.backend]] to a pool.
func (t *Table) Backend(address string, kv ...any) *Table {
	return t.add("[[pool.backend]]", append([]any{"address", address}, kv...))
}

// HealthCheck sets a pool's [pool.health_check].
func (t *Table) HealthCheck(kv ...any) *Table { return t.add("[pool.health_check]", kv) }

func (t *Table) add(header string, kv []any) *Table {
	s := newTable(header).Set(kv...)
	t.sub = append(t.sub, s)
	return s
}

// String is the config as TOML.
func (c *Config) String() string {
	var b strings.Builder
	c.global.write(&b, "")
	for _, t := range c.tables {
		b.WriteByte('\n')
		t.write(&b, "")
	}
	return b.String()
}

func (t *Table) write(b *strings.Builder, indent string) {
	fmt.Fprintf(b, "%s%s\n", indent, t.header)
	for _, k := range t.keys {
		fmt.Fprintf(b, "%s%s = %s\n", indent, k, value(t.vals[k]))
	}
	for _, s := range t.sub {
		s.write(b, indent+"  ")
	}
}

func value(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case time.Duration:
		return fmt.Sprintf("%q", v.String())
	case Raw:
		return string(v)
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case map[string]string:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		q := make([]string, len(keys))
		for i, k := range keys {
			q[i] = fmt.Sprintf("%q = %q", k, v[k])
		}
		return "{ " + strings.Join(q, ", ") + " }"
	case int, int64, bool, float64:
		return fmt.Sprint(v)
	}
	panic(fmt.Sprintf("conftest: no TOML form for %T", v))
}

// Write writes the config to name in its directory and returns the path.
func (c *Config) Write(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(c.dir, name)
	if err := os.WriteFile(p, []byte(c.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
