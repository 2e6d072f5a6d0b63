package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

var algorithms = []string{AlgorithmMaglev, AlgorithmLeastConn, AlgorithmWRR, AlgorithmP2C}

func TestNew(t *testing.T) {
	ok := backends(3, one)
	for _, tc := range []struct {
		desc     string
		alg      string
		backends []Backend
		opts     Options
		want     error
	}{
		{"maglev", AlgorithmMaglev, ok, Options{}, nil},
		{"least_conn", AlgorithmLeastConn, ok, Options{}, nil},
		{"wrr", AlgorithmWRR, ok, Options{}, nil},
		{"p2c", AlgorithmP2C, ok, Options{}, nil},
		{"unknown", "round_robin", ok, Options{}, ErrUnknownAlgorithm},
		{"empty name", "", ok, Options{}, ErrUnknownAlgorithm},
		{"bad table size", AlgorithmMaglev, ok, Options{TableSize: 1000}, ErrTableSize},
		{"bad table size, no backends", AlgorithmMaglev, nil, Options{TableSize: 1000}, ErrTableSize},
		{"weight 0", AlgorithmWRR, []Backend{{Name: "a", Weight: 0}}, Options{}, ErrBackend},
		{"weight too large", AlgorithmP2C, []Backend{{Name: "a", Weight: MaxWeight + 1, Active: new(atomic.Int64)}}, Options{}, ErrBackend},
		{"nil Active for least_conn", AlgorithmLeastConn, []Backend{{Name: "a", Weight: 1}}, Options{}, ErrBackend},
		{"nil Active for p2c", AlgorithmP2C, []Backend{{Name: "a", Weight: 1}}, Options{}, ErrBackend},
		{"nil Active for maglev", AlgorithmMaglev, []Backend{{Name: "a", Weight: 1}}, Options{}, nil},
		{"duplicate name for maglev", AlgorithmMaglev, []Backend{{Name: "a", Weight: 1}, {Name: "a", Weight: 1}}, Options{}, ErrBackend},
		{"duplicate name for wrr", AlgorithmWRR, []Backend{{Name: "a", Weight: 1}, {Name: "a", Weight: 1}}, Options{}, nil},
		{"unnamed for maglev", AlgorithmMaglev, []Backend{{Weight: 1}}, Options{}, ErrBackend},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			b, err := New(tc.alg, tc.backends, tc.opts)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if err == nil && b == nil {
				t.Fatal("nil balancer without error")
			}
		})
	}
}

func TestNoBackends(t *testing.T) {
	for _, alg := range algorithms {
		b, err := New(alg, nil, Options{})
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if got := b.NewPicker().Pick(42, nil); got != -1 {
			t.Errorf("%s: Pick = %d, want -1", alg, got)
		}
	}
	mg, err := NewMaglev(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if mg.Pick(1, nil) != -1 || mg.NewPicker().Pick(1, nil) != -1 || mg.Owner(0) != -1 {
		t.Error("empty Maglev picks a backend")
	}
}

// TestTriedExclusion: no algorithm ever returns a tried backend, and each
// returns -1 exactly when every backend was tried. Tried may hold
// duplicates and indices from an older, larger backend set.
func TestTriedExclusion(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, alg := range algorithms {
		for _, n := range []int{1, 2, 3, 5, 16, 17, 40} {
			t.Run(fmt.Sprintf("%s/n=%d", alg, n), func(t *testing.T) {
				bs := backends(n, func(i int) int { return []int{1, 10000, 3, 1, 7}[i%5] })
				b, err := New(alg, bs, Options{TableSize: 1009})
				if err != nil {
					t.Fatal(err)
				}
				pickers := []Picker{b.NewPicker(), b.NewPicker()}
				for range 3000 {
					var tried Tried
					for range r.IntN(MaxTried + 3) {
						tried.Add(r.IntN(n + 2))
					}
					all := allTried(&tried, n)
					for _, pk := range pickers {
						got := pk.Pick(r.Uint64(), &tried)
						switch {
						case all && got != -1:
							t.Fatalf("all tried (%v), Pick = %d", tried.idx[:tried.n], got)
						case !all && (got < 0 || got >= n || tried.Has(got)):
							t.Fatalf("tried %v, Pick = %d", tried.idx[:tried.n], got)
						}
					}
				}
			})
		}
	}
}

// TestRetrySequence plays the data plane's retry loop: pick, add to tried,
// pick again, until -1; every backend comes up exactly once.
func TestRetrySequence(t *testing.T) {
	for _, alg := range algorithms {
		bs := backends(MaxTried, func(i int) int { return 1 + i*i })
		b, err := New(alg, bs, Options{TableSize: 65537})
		if err != nil {
			t.Fatal(err)
		}
		pk := b.NewPicker()
		var tried Tried
		seen := map[int]bool{}
		for {
			i := pk.Pick(12345, &tried)
			if i < 0 {
				break
			}
			if seen[i] {
				t.Fatalf("%s: backend %d picked twice", alg, i)
			}
			seen[i] = true
			tried.Add(i)
		}
		if len(seen) != MaxTried {
			t.Errorf("%s: %d backends tried, want %d", alg, len(seen), MaxTried)
		}
	}
}

func TestPickNoAllocs(t *testing.T) {
	for _, alg := range algorithms {
		bs := backends(20, func(i int) int { return 1 + i%3 })
		b, err := New(alg, bs, Options{})
		if err != nil {
			t.Fatal(err)
		}
		pk := b.NewPicker()
		var tried Tried
		tried.Add(3)
		tried.Add(7)
		key := uint64(0)
		allocs := testing.AllocsPerRun(1000, func() {
			key += golden64
			pk.Pick(key, nil)
			pk.Pick(key, &tried)
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per pick", alg, allocs)
		}
	}
}

// TestConcurrentPickers runs every algorithm from several goroutines, each
// with a picker of its own made concurrently with the others', as the
// event loops do; run with -race.
func TestConcurrentPickers(t *testing.T) {
	const loops = 4
	for _, alg := range algorithms {
		bs := backends(9, func(i int) int { return 1 + i })
		b, err := New(alg, bs, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for l := range loops {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pk := b.NewPicker()
				var tried Tried
				for k := range 2000 {
					i := pk.Pick(mix64(uint64(k*loops+l)), &tried)
					bs[i].Active.Add(1)
					if k%3 == 0 {
						bs[i].Active.Add(-1)
					}
					if tried.Reset(); k%5 == 0 {
						tried.Add(i)
					}
				}
			}()
		}
		wg.Wait()
	}
}

func TestHashKey(t *testing.T) {
	v4 := mustAddr(t, "198.51.100.7")
	mapped := mustAddr(t, "::ffff:198.51.100.7")
	zoned := mustAddr(t, "fe80::1%eth0")
	if HashKey(v4, 1, false) != HashKey(mapped, 2, false) {
		t.Error("IPv4 and IPv4-mapped keys differ")
	}
	if HashKey(zoned, 0, false) != HashKey(mustAddr(t, "fe80::1"), 0, false) {
		t.Error("the zone changes the key")
	}
	if HashKey(v4, 1, false) != HashKey(v4, 2, false) {
		t.Error("the port changes a source_ip key")
	}
	if HashKey(v4, 1, true) == HashKey(v4, 2, true) {
		t.Error("the port does not change a source_ip_port key")
	}
	if HashKey(v4, 0, true) == HashKey(v4, 0, false) {
		t.Error("port 0 with port = without port")
	}
	if n := testing.AllocsPerRun(100, func() { HashKey(v4, 80, true) }); n != 0 {
		t.Errorf("HashKey allocates %v", n)
	}
}

// TestPickerSize: every stateful picker fills exactly pickerSize bytes, the
// size class that keeps it on cache lines of its own.
func TestPickerSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		size uintptr
	}{
		{"wrr", unsafe.Sizeof(wrrPicker{})},
		{"least_conn", unsafe.Sizeof(leastConnPicker{})},
		{"p2c", unsafe.Sizeof(p2cPicker{})},
	} {
		if tc.size != pickerSize {
			t.Errorf("%s picker: %d bytes, want %d", tc.name, tc.size, pickerSize)
		}
	}
}
