package l4

import (
	"testing"

	"github.com/lbd-lb/lbd/balancer"
)

// TestLoopPicker: a loop keeps one picker per listener while its pool's
// snapshot stays the same, makes a new one when the pool publishes
// another, and picks through it without allocating.
func TestLoopPicker(t *testing.T) {
	e := testEngine(t, Options{Loops: 2})
	backend := listen(t, "tcp", "127.0.0.1:0", echo)
	p := testPool(t, e.Loops(), "wrr", backend, backend)
	ln := proxyTo(t, e, p, nil)
	var first, again, other balancer.Picker
	onLoop(e, func(l *loop) {
		first = l.picker(ln, p.Snapshot())
		again = l.picker(ln, p.Snapshot())
	})
	if first == nil || first != again {
		t.Fatalf("the loop made a new picker for the same snapshot")
	}
	if err := p.SetWeight(p.Backends()[0], 3); err != nil {
		t.Fatal(err)
	}
	onLoop(e, func(l *loop) { other = l.picker(ln, p.Snapshot()) })
	if other == first {
		t.Fatal("the loop kept its picker across a new snapshot")
	}
	if ln.pickers[1].picker != nil {
		t.Fatal("loop 1 got a picker it never asked for")
	}
}

// TestLoopPickNoAllocs: an event loop's pick, snapshot load and picker
// lookup included, allocates nothing.
func TestLoopPickNoAllocs(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	a := listen(t, "tcp", "127.0.0.1:0", echo)
	b := listen(t, "tcp", "127.0.0.1:0", echo)
	for _, alg := range []string{"maglev", "least_conn", "wrr", "p2c"} {
		p := testPool(t, e.Loops(), alg, a, b)
		ln := proxyTo(t, e, p, nil)
		var allocs float64
		onLoop(e, func(l *loop) {
			var tried balancer.Tried
			key := uint64(0)
			l.picker(ln, p.Snapshot())
			allocs = testing.AllocsPerRun(1000, func() {
				key += 0x9e3779b97f4a7c15
				tried.Reset()
				i := l.picker(ln, p.Snapshot()).Pick(key, &tried)
				tried.Add(i)
				l.picker(ln, p.Snapshot()).Pick(key, &tried)
			})
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per pick", alg, allocs)
		}
	}
}
