package config

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/lbd-lb/lbd/balancer"
	"github.com/lbd-lb/lbd/pkg/l7/ratelimit"
	"github.com/lbd-lb/lbd/pkg/l7/route"
)

// addSeeds seeds f with every config in testdata and the example config.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range append(files, examplePath) {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		inListener(`protocol = "udp"`),
		inHealthCheck(`expect_status = "200-"`),
		`listener = [{ name = "a", bind = "127.0.0.1:1", pool = "p" }]`,
		"a = \"\"\"\n[[x]]\n\"\"\"\nb = { c = [1, {d = 2}] }\n",
	} {
		f.Add([]byte(s))
	}
}

// FuzzParse checks that Parse never panics, that every problem it reports
// names the file and a line inside it, and that what it accepts holds the
// invariants the rest of lbd relies on.
func FuzzParse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.toml"
		cfg, err := Parse(name, data)
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config and an error")
			}
			list, ok := errors.AsType[ErrorList](err)
			if !ok || len(list) == 0 {
				t.Fatalf("error is %T %v, want a non-empty ErrorList", err, err)
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			for _, e := range list {
				if e.File != name {
					t.Fatalf("problem %q names file %q, want %q", e, e.File, name)
				}
				if e.Line < 0 || e.Line > lines {
					t.Fatalf("problem %q at line %d of a %d-line input", e, e.Line, lines)
				}
			}
			return
		}
		checkInvariants(t, cfg)
	})
}

// FuzzPositions checks that the line scanner finds every key that the TOML
// decoder finds, in any valid document.
func FuzzPositions(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		checkPositionsCover(t, data)
	})
}

func checkInvariants(t *testing.T, cfg *Config) {
	t.Helper()
	if len(cfg.Listeners) == 0 {
		t.Fatal("accepted a config without listeners")
	}
	for _, l := range cfg.Listeners {
		if !l.Bind.IsValid() || l.Bind.Port() == 0 {
			t.Fatalf("listener %q: bad bind %v", l.Name, l.Bind)
		}
		if l.Protocol == ProtocolHTTP {
			checkHTTPListener(t, cfg, &l)
		} else if cfg.Pool(l.Pool) == nil || len(l.Routes) != 0 {
			t.Fatalf("listener %q feeds missing pool %q, or has routes", l.Name, l.Pool)
		}
		if l.ConnectTimeout <= 0 || l.IdleTimeout <= 0 || l.Retries < 0 || l.Retries > maxRetries {
			t.Fatalf("listener %q: bad timeouts or retries: %+v", l.Name, l)
		}
		if l.AcceptProxyProtocol && len(l.TrustedProxies) == 0 {
			t.Fatalf("listener %q accepts PROXY headers from nobody", l.Name)
		}
		if l.UDPReuseSockets && (l.Protocol != ProtocolUDP || l.UDPResponses < 1) {
			t.Fatalf("listener %q reuses udp sockets without udp_responses: %+v", l.Name, l)
		}
		if l.Protocol != ProtocolHTTP && (l.HeaderTimeout != 0 || l.TunnelTimeout != 0 || l.MaxBodyBytes != 0) {
			t.Fatalf("listener %q has http limits: %+v", l.Name, l)
		}
	}
	for _, p := range cfg.Pools {
		if len(p.Backends) == 0 || !balancer.IsPrime(p.MaglevTableSize) {
			t.Fatalf("pool %q: %d backends, table size %d", p.Name, len(p.Backends), p.MaglevTableSize)
		}
		for _, b := range p.Backends {
			if !b.Address.IsValid() || b.Name == "" || b.Weight < minWeight || b.Weight > maxWeight {
				t.Fatalf("pool %q: bad backend %+v", p.Name, b)
			}
		}
		h := p.HealthCheck
		if h.Interval <= 0 || h.Timeout <= 0 || h.Timeout > h.Interval || h.Rise < 1 || h.Fall < 1 || h.ExpectStatusMin > h.ExpectStatusMax {
			t.Fatalf("pool %q: bad health check %+v", p.Name, h)
		}
	}
}

func checkHTTPListener(t *testing.T, cfg *Config, l *Listener) {
	t.Helper()
	if l.Pool != "" || len(l.Routes) == 0 || (l.TLSCertFile == "") != (l.TLSKeyFile == "") {
		t.Fatalf("http listener %q: pool %q, %d routes, tls %q %q", l.Name, l.Pool, len(l.Routes), l.TLSCertFile, l.TLSKeyFile)
	}
	if l.HeaderTimeout <= 0 || l.ReadTimeout <= 0 || l.WriteTimeout <= 0 || l.TunnelTimeout <= 0 ||
		l.MaxHeaderBytes < 1024 || l.MaxHeaderBytes > 1<<20 || l.MaxBodyBytes < 1 || l.MaxBodyBytes > maxMaxBodyBytes {
		t.Fatalf("http listener %q: timeouts %v %v %v, sizes %d %d", l.Name, l.HeaderTimeout, l.ReadTimeout, l.WriteTimeout, l.MaxHeaderBytes, l.MaxBodyBytes)
	}
	specs := make([]route.Spec, len(l.Routes))
	for i, r := range l.Routes {
		specs[i] = r.Spec(fmt.Sprint(i))
		if cfg.Pool(r.Pool) == nil || r.Auth != "" && cfg.Auth(r.Auth) == nil {
			t.Fatalf("http listener %q: route %d has missing pool %q or auth %q", l.Name, i, r.Pool, r.Auth)
		}
		if rl := r.RateLimit; rl != nil {
			k, err := ratelimit.ParseKey(rl.Key)
			if !(rl.Rate > 0) || math.IsInf(rl.Rate, 0) || rl.Burst < 1 || err != nil || k.Kind == ratelimit.KeyClaim && r.Auth == "" {
				t.Fatalf("http listener %q: route %d: bad rate limit %+v", l.Name, i, *rl)
			}
		}
	}
	if _, err := route.Compile(specs); err != nil {
		t.Fatalf("http listener %q: %v", l.Name, err)
	}
	for _, a := range cfg.Auths {
		if len(a.Algorithms) == 0 || (a.JWKSFile == "") == (a.HMACSecretFile == "") || a.Leeway < 0 {
			t.Fatalf("auth %q: %+v", a.Name, a)
		}
	}
}
