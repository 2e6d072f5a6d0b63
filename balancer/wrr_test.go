package balancer

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// dynamicWRR is a wrr forced onto nginx's step, whatever its period: its
// pickers keep current values rather than a position in the cycle.
func dynamicWRR(bs []Backend) *wrr {
	w := newWRR(bs)
	w.sched = nil
	return w
}

func sequence(p Picker, picks int) string {
	var sb strings.Builder
	for range picks {
		sb.WriteByte(byte('a' + p.Pick(0, nil)))
	}
	return sb.String()
}

// TestWRRSequence pins nginx's smooth sequence for weights 5, 1, 1.
func TestWRRSequence(t *testing.T) {
	bs := backends(3, func(i int) int { return []int{5, 1, 1}[i] })
	for _, tc := range []struct {
		desc string
		b    Balancer
	}{
		{"cycle", newWRR(bs)},
		{"step", dynamicWRR(bs)},
	} {
		if got, want := sequence(tc.b.NewPicker(), 21), "aabacaaaabacaaaabacaa"; got != want {
			t.Errorf("%s: %s, want %s", tc.desc, got, want)
		}
	}
}

// TestWRRCycle: over one period each backend is picked exactly its weight
// (over the gcd) times, and every prefix stays within one pick of its
// exact share, which is what makes the sequence smooth.
func TestWRRCycle(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	sets := [][]int{{5, 1, 1}, {1, 1, 1, 1}, {10000, 1}, {3, 7, 11, 13}, {100, 200, 300}, {2, 2, 4}}
	for range 20 {
		ws := make([]int, 1+r.IntN(12))
		for i := range ws {
			ws[i] = 1 + r.IntN(50)
		}
		sets = append(sets, ws)
	}
	for _, ws := range sets {
		t.Run(fmt.Sprint(ws), func(t *testing.T) {
			bs := backends(len(ws), func(i int) int { return ws[i] })
			var total, g int64
			for _, w := range ws {
				total += int64(w)
				g = gcd(int64(w), g)
			}
			period := total / g
			for _, b := range []*wrr{newWRR(bs), dynamicWRR(bs)} {
				pk := b.NewPicker()
				got := make([]int64, len(ws))
				worst := 0.0
				for t0 := int64(1); t0 <= 2*period; t0++ {
					got[pk.Pick(0, nil)]++
					for i, w := range ws {
						exact := float64(t0) * float64(w) / float64(total)
						worst = max(worst, float64(got[i])-exact, exact-float64(got[i]))
					}
					if t0 == period {
						for i, w := range ws {
							if got[i] != int64(w)/g {
								t.Fatalf("sched=%v: %d picks of %d in a period, want %d", b.sched != nil, got[i], i, int64(w)/g)
							}
						}
					}
				}
				if worst >= 1 {
					t.Errorf("sched=%v: a prefix strays %.2f picks from its share", b.sched != nil, worst)
				}
			}
		})
	}
}

// TestWRRPickers: each picker (one per event loop) runs the whole cycle on
// its own, from a different starting point.
func TestWRRPickers(t *testing.T) {
	bs := backends(3, func(i int) int { return []int{5, 1, 1}[i] })
	b := newWRR(bs)
	p0, p1 := b.NewPicker(), b.NewPicker()
	l0, l1 := sequence(p0, 14), sequence(p1, 14)
	if l0 != "aabacaaaabacaa" {
		t.Errorf("picker 0: %s", l0)
	}
	if l1 == l0 || !strings.Contains(l0+l0, l1[:7]) {
		t.Errorf("picker 1 (%s) is not a rotation of picker 0's cycle", l1)
	}
}

// TestWRRTried: a tried backend is passed over and the others keep their
// relative shares.
func TestWRRTried(t *testing.T) {
	bs := backends(3, func(i int) int { return []int{5, 1, 2}[i] })
	for _, b := range []*wrr{newWRR(bs), dynamicWRR(bs)} {
		pk := b.NewPicker()
		var tried Tried
		tried.Add(0)
		got := make([]int, 3)
		for range 300 {
			got[pk.Pick(0, &tried)]++
		}
		if got[0] != 0 || got[2] != 2*got[1] {
			t.Errorf("sched=%v: picks %v with backend 0 tried", b.sched != nil, got)
		}
		// The untried sequence carries on smoothly afterwards.
		if s := sequence(pk, 16); strings.Count(s, "a") != 10 || strings.Contains(s, "aaa") {
			t.Errorf("sched=%v: after retries, %s", b.sched != nil, s)
		}
	}
}

// TestWRRPickersSpread: the pickers of one balancer start at points spread
// over the cycle, so that the event loops' first connections do not all go
// to one backend.
func TestWRRPickersSpread(t *testing.T) {
	b := newWRR(backends(8, one))
	first := map[int]bool{}
	for range 8 {
		first[b.NewPicker().Pick(0, nil)] = true
	}
	if len(first) < 6 {
		t.Errorf("8 pickers start on %d distinct backends of 8", len(first))
	}
}
