package config

import (
	"encoding"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// examplePath is the shipped example config.
const examplePath = "../../configs/lbd.example.toml"

// TestGolden pins the parsed form of each valid config in testdata, and the
// full error report of each invalid one, against its .golden file.
func TestGolden(t *testing.T) {
	tests := []struct {
		desc, input, golden string
		valid               bool
	}{
		{"every key", "testdata/full.toml", "testdata/full.golden", true},
		{"defaults", "testdata/defaults.toml", "testdata/defaults.golden", true},
		{"example config", examplePath, "testdata/example.golden", true},
		{"many mistakes", "testdata/invalid.toml", "testdata/invalid.golden", false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			data, err := os.ReadFile(tt.input)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Base(tt.input)
			cfg, err := Parse(name, data)
			var got string
			switch {
			case tt.valid && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.valid:
				got = dump(cfg)
			case err == nil:
				t.Fatal("Parse succeeded on an invalid config")
			default:
				got = err.Error() + "\n"
			}
			if *update {
				if err := os.WriteFile(tt.golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(tt.golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s) differs from %s (run go test -update to accept):\n%s", tt.input, tt.golden, lineDiff(string(want), got))
			}
		})
	}
}

// TestExampleConfig checks that the shipped example loads cleanly and uses
// every key that is implemented, so that it stays a complete reference.
func TestExampleConfig(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatalf("the example config does not load:\n%v", err)
	}
	if cfg.File != examplePath {
		t.Errorf("File = %q, want %q", cfg.File, examplePath)
	}

	var tree map[string]any
	md, err := toml.DecodeFile(examplePath, &tree)
	if err != nil {
		t.Fatal(err)
	}
	shown := map[string]bool{}
	for _, k := range md.Keys() {
		shown[strings.Join(k, ".")] = true
	}
	for _, k := range implementedKeys(reflect.TypeFor[rawConfig](), nil) {
		if !shown[strings.Join(k, ".")] {
			t.Errorf("the example config does not show %q", strings.Join(k, "."))
		}
	}
	algorithms := map[string]bool{}
	for _, p := range cfg.Pools {
		algorithms[p.Algorithm] = true
	}
	if !algorithms[AlgorithmMaglev] || !algorithms[AlgorithmLeastConn] {
		t.Errorf("the example config should show a maglev and a least_conn pool, has %v", algorithms)
	}
}

// unimplemented lists the schema keys that validation rejects for now, and
// those that name files which must exist when the config is checked (TLS
// and key files): the example shows them in comments instead, since its
// paths do not exist where the tests run.
var unimplemented = map[string]bool{
	"auth": true, "listener.route.auth": true,
	"listener.tls_cert_file": true, "listener.tls_key_file": true,
}

// implementedKeys lists the leaf keys of the schema below t.
func implementedKeys(t reflect.Type, prefix []string) [][]string {
	var keys [][]string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		k := append(append([]string(nil), prefix...), name)
		if unimplemented[strings.Join(k, ".")] {
			continue
		}
		if isLeaf(f.Type) {
			keys = append(keys, k)
			continue
		}
		keys = append(keys, implementedKeys(structType(f.Type), k)...)
	}
	return keys
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("testdata/defaults.toml")
	if err != nil {
		t.Fatal(err)
	}
	wantGlobal := Global{
		Workers:         0,
		AdminSocket:     "/run/lbd/admin.sock",
		MetricsListen:   "127.0.0.1:9090",
		LogLevel:        slog.LevelInfo,
		LogFormat:       "text",
		ShutdownTimeout: 30 * time.Second,
		StateFile:       "",
	}
	if cfg.Global != wantGlobal {
		t.Errorf("Global = %+v\nwant     %+v", cfg.Global, wantGlobal)
	}
	wantListener := Listener{
		Name:           "l",
		Bind:           netip.MustParseAddrPort("0.0.0.0:80"),
		Protocol:       "tcp",
		Pool:           "p",
		ConnectTimeout: 3 * time.Second,
		IdleTimeout:    10 * time.Minute,
		Retries:        2,
		UDPMaxFlows:    100000,
		Line:           2,
	}
	if !reflect.DeepEqual(cfg.Listeners, []Listener{wantListener}) {
		t.Errorf("Listeners = %+v\nwant        %+v", cfg.Listeners, []Listener{wantListener})
	}
	wantPool := Pool{
		Name:            "p",
		Algorithm:       "maglev",
		Hash:            "source_ip",
		MaglevTableSize: 65537,
		PassiveFailures: 5,
		Backends: []Backend{{
			Name:    "192.0.2.10:80",
			Address: netip.MustParseAddrPort("192.0.2.10:80"),
			Weight:  100,
			Line:    9,
		}},
		HealthCheck: HealthCheck{
			Type:            "tcp",
			Interval:        2 * time.Second,
			Timeout:         time.Second,
			Rise:            2,
			Fall:            3,
			Path:            "/healthz",
			ExpectStatusMin: 200,
			ExpectStatusMax: 399,
		},
		Line: 7,
	}
	if !reflect.DeepEqual(cfg.Pools, []Pool{wantPool}) {
		t.Errorf("Pools = %+v\nwant    %+v", cfg.Pools, []Pool{wantPool})
	}
}

func TestConfigPool(t *testing.T) {
	cfg, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gateways", "internal", "spare", "batch"} {
		p := cfg.Pool(name)
		if p == nil || p.Name != name {
			t.Errorf("Pool(%q) = %v", name, p)
		}
	}
	if p := cfg.Pool("nope"); p != nil {
		t.Errorf("Pool(nope) = %v, want nil", p)
	}
	// Pool returns the config's own pool, not a copy.
	cfg.Pool("batch").PassiveFailures = 42
	if cfg.Pools[3].PassiveFailures != 42 {
		t.Error("Pool returned a copy")
	}
}

func TestLoadMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.toml")
	_, err := Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load: %v, want an error that is fs.ErrNotExist", err)
	}
	if want := path + ": no such file or directory"; err.Error() != want {
		t.Errorf("Load error = %q, want %q", err, want)
	}
}

func TestErrorFormat(t *testing.T) {
	tests := []struct {
		desc string
		err  error
		want string
	}{
		{"with line", &Error{File: "a.toml", Line: 7, Msg: "bad"}, "a.toml:7: bad"},
		{"without line", &Error{File: "a.toml", Msg: "bad"}, "a.toml: bad"},
		{"list", ErrorList{{File: "a.toml", Line: 1, Msg: "x"}, {File: "a.toml", Line: 2, Msg: "y"}}, "a.toml:1: x\na.toml:2: y"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}

	// Each problem of a list is reachable with errors.As.
	_, err := Parse("t.toml", []byte(inBackend("weight = 0")))
	var e *Error
	if !errors.As(err, &e) || e.Line != 9 {
		t.Errorf("errors.As(%v) = %v, want the problem at line 9", err, e)
	}
}

// dump prints a config as "path = value" lines, one per field, for golden
// files that are easy to read and to diff.
func dump(cfg *Config) string {
	var b strings.Builder
	dumpValue(&b, "", reflect.ValueOf(*cfg))
	return b.String()
}

var textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()

func dumpValue(b *strings.Builder, path string, v reflect.Value) {
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		fmt.Fprintf(b, "%s = %s\n", path, time.Duration(v.Int()))
	case v.Type() == reflect.TypeFor[slog.Level]():
		fmt.Fprintf(b, "%s = %s\n", path, slog.Level(v.Int()))
	case v.Type().Implements(textMarshaler):
		text, err := v.Interface().(encoding.TextMarshaler).MarshalText()
		if err != nil {
			text = []byte("!" + err.Error())
		}
		fmt.Fprintf(b, "%s = %s\n", path, text)
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			name := v.Type().Field(i).Name
			if path != "" {
				name = path + "." + name
			}
			dumpValue(b, name, v.Field(i))
		}
	case v.Kind() == reflect.Slice:
		if v.Len() == 0 {
			fmt.Fprintf(b, "%s = []\n", path)
		}
		for i := range v.Len() {
			dumpValue(b, fmt.Sprintf("%s[%d]", path, i), v.Index(i))
		}
	case v.Kind() == reflect.Pointer:
		if v.IsNil() {
			fmt.Fprintf(b, "%s = nil\n", path)
			return
		}
		dumpValue(b, path, v.Elem())
	case v.Kind() == reflect.Map:
		if v.IsNil() {
			fmt.Fprintf(b, "%s = nil\n", path)
			return
		}
		if v.Len() == 0 {
			fmt.Fprintf(b, "%s = {}\n", path)
		}
		keys := v.MapKeys()
		slices.SortFunc(keys, func(x, y reflect.Value) int { return strings.Compare(x.String(), y.String()) })
		for _, k := range keys {
			dumpValue(b, fmt.Sprintf("%s[%q]", path, k.String()), v.MapIndex(k))
		}
	case v.Kind() == reflect.String:
		fmt.Fprintf(b, "%s = %q\n", path, v.String())
	default:
		fmt.Fprintf(b, "%s = %v\n", path, v.Interface())
	}
}

// lineDiff shows the lines that differ between want and got.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := range max(len(w), len(g)) {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want %s\n   got %s\n", i+1, wl, gl)
		}
	}
	return b.String()
}
