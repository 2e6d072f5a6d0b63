package pool

import (
	"net/netip"

	"github.com/lbd-lb/lbd/healthcheck"
	"testing"
)

func spec(algorithm string, weights ...int) Spec {
	s := Spec{Name: "p", Algorithm: algorithm, Hash: "source_ip", MaglevTableSize: 65537,
		HealthCheck: healthcheck.Config{Type: healthcheck.TypeNone}}
	for i, w := range weights {
		s.Backends = append(s.Backends, BackendSpec{
			Address: netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), 80),
			Weight:  w,
		})
	}
	return s
}

func share(snap *Snapshot, loops int) []int {
	counts := make([]int, len(snap.Backends))
	for k := 0; k < 1000; k++ {
		counts[snap.Balancer.Pick(uint64(k), k%loops, nil)]++
	}
	return counts
}

// TestSetWeight: a weight change publishes a new snapshot for new picks;
// a snapshot already taken (by a connection being set up) is unchanged.
func TestSetWeight(t *testing.T) {
	p, err := New(spec("wrr", 1, 1), Options{Loops: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := p.Snapshot()
	if c := share(old, 2); c[0] != 500 || c[1] != 500 {
		t.Fatalf("equal weights gave %v", c)
	}
	if err := p.SetWeight(p.Backends()[0], 3); err != nil {
		t.Fatal(err)
	}
	if c := share(p.Snapshot(), 2); c[0] != 750 || c[1] != 250 {
		t.Fatalf("weights 3:1 gave %v", c)
	}
	if c := share(old, 2); c[0] != 500 || c[1] != 500 {
		t.Fatalf("old snapshot changed: %v", c)
	}
	for _, w := range []int{0, 10001} {
		if err := p.SetWeight(p.Backends()[0], w); err == nil {
			t.Fatalf("weight %d accepted", w)
		}
	}
}

func TestBackendLookup(t *testing.T) {
	s := spec("maglev", 1, 1)
	s.Backends[1].Name = "named"
	p, err := New(s, Options{Loops: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b := p.Backend("192.0.2.1:80"); b == nil || b.Name != "192.0.2.1:80" {
		t.Fatalf("by address: %+v", b)
	}
	if b := p.Backend("named"); b == nil || b.Addr.String() != "192.0.2.2:80" {
		t.Fatalf("by name: %+v", b)
	}
	if b := p.Backend("192.0.2.2:80"); b == nil || b.Name != "named" {
		t.Fatalf("named backend by address: %+v", b)
	}
	if p.Backend("nope") != nil {
		t.Fatal("found a backend that does not exist")
	}
}

func TestBadSpec(t *testing.T) {
	if _, err := New(spec("bogus", 1), Options{Loops: 1}, nil); err == nil {
		t.Fatal("unknown algorithm accepted")
	}
	if _, err := New(spec("maglev", 1, 20000), Options{Loops: 1}, nil); err == nil {
		t.Fatal("weight out of range accepted")
	}
}
