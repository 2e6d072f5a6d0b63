package balancer

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// dynamicWRR is a wrr forced onto nginx's step, whatever its period.
func dynamicWRR(bs []Backend, loops int) *wrr {
	w := newWRR(bs, loops)
	w.sched = nil
	w.stride = (len(bs)+7)/8*8 + linePad
	w.state = make([]int64, loops*w.stride+linePad)
	return w
}

func sequence(b Balancer, loop, picks int) string {
	var sb strings.Builder
	for range picks {
		sb.WriteByte(byte('a' + b.Pick(0, loop, nil)))
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
		{"cycle", newWRR(bs, 1)},
		{"step", dynamicWRR(bs, 1)},
	} {
		if got, want := sequence(tc.b, 0, 21), "aabacaaaabacaaaabacaa"; got != want {
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
			for _, b := range []*wrr{newWRR(bs, 1), dynamicWRR(bs, 1)} {
				got := make([]int64, len(ws))
				worst := 0.0
				for t0 := int64(1); t0 <= 2*period; t0++ {
					got[b.Pick(0, 0, nil)]++
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

// TestWRRLoops: each loop runs the whole cycle on its own, from a
// different starting point.
func TestWRRLoops(t *testing.T) {
	bs := backends(3, func(i int) int { return []int{5, 1, 1}[i] })
	b := newWRR(bs, 2)
	l0, l1 := sequence(b, 0, 14), sequence(b, 1, 14)
	if l0 != "aabacaaaabacaa" {
		t.Errorf("loop 0: %s", l0)
	}
	if l1 == l0 || !strings.Contains(l0+l0, l1[:7]) {
		t.Errorf("loop 1 (%s) is not a rotation of loop 0's cycle", l1)
	}
}

// TestWRRTried: a tried backend is passed over and the others keep their
// relative shares.
func TestWRRTried(t *testing.T) {
	bs := backends(3, func(i int) int { return []int{5, 1, 2}[i] })
	for _, b := range []*wrr{newWRR(bs, 1), dynamicWRR(bs, 1)} {
		var tried Tried
		tried.Add(0)
		got := make([]int, 3)
		for range 300 {
			got[b.Pick(0, 0, &tried)]++
		}
		if got[0] != 0 || got[2] != 2*got[1] {
			t.Errorf("sched=%v: picks %v with backend 0 tried", b.sched != nil, got)
		}
		// The untried sequence carries on smoothly afterwards.
		if s := sequence(b, 0, 16); strings.Count(s, "a") != 10 || strings.Contains(s, "aaa") {
			t.Errorf("sched=%v: after retries, %s", b.sched != nil, s)
		}
	}
}
