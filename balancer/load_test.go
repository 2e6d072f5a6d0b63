package balancer

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// simulate keeps about live connections open: each step opens one, picked
// by pick, and once the target is reached closes a random open one. It
// returns the worst max/mean of active-per-weight seen after warm-up.
func simulate(bs []Backend, live, steps int, seed uint64, pick func() int) float64 {
	r := rand.New(rand.NewPCG(seed, seed))
	var open []int
	var wsum int64
	for _, b := range bs {
		wsum += int64(b.Weight)
		b.Active.Store(0)
	}
	worst := 0.0
	for step := 0; step < steps; step++ {
		i := pick()
		bs[i].Active.Add(1)
		open = append(open, i)
		if len(open) > live {
			k := r.IntN(len(open))
			bs[open[k]].Active.Add(-1)
			open[k] = open[len(open)-1]
			open = open[:len(open)-1]
		}
		if step < 2*live {
			continue
		}
		mean := float64(len(open)) / float64(wsum)
		peak := 0.0
		for _, b := range bs {
			peak = max(peak, float64(b.Active.Load())/float64(b.Weight))
		}
		worst = max(worst, peak/mean)
	}
	return worst
}

// TestLoadSpread: under connections that open and close at random,
// least_conn and p2c keep the busiest backend near the mean, where a
// weighted random choice (the baseline, computed alongside so that the
// bound is seen not to pass trivially) strays far above it.
func TestLoadSpread(t *testing.T) {
	for _, tc := range []struct {
		desc   string
		n      int
		weight func(int) int
		live   int
		// bounds on the worst max/mean seen over the run
		leastConn, p2c float64
	}{
		// 50 connections per unit of weight on average
		{"equal", 20, one, 1000, 1.1, 1.25},
		{"weighted", 20, func(i int) int { return 1 + i%4 }, 2500, 1.1, 1.25},
		{"one light among heavy", 6, func(i int) int { return []int{1, 100, 100, 100, 100, 100}[i] }, 25050, 1.1, 1.25},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bs := backends(tc.n, tc.weight)
			lc := newLeastConn(bs, 11).NewPicker()
			pc := newP2C(bs, 12).NewPicker()
			random := newP2C(bs, 13).NewPicker().(*p2cPicker) // its draw alone is weighted random
			const steps = 100000
			gotLC := simulate(bs, tc.live, steps, 1, func() int { return lc.Pick(0, nil) })
			gotP2C := simulate(bs, tc.live, steps, 1, func() int { return pc.Pick(0, nil) })
			gotRandom := simulate(bs, tc.live, steps, 1, func() int { return random.p.draw(&random.r) })
			t.Logf("worst max/mean: least_conn %.3f, p2c %.3f, random %.3f", gotLC, gotP2C, gotRandom)
			if gotLC > tc.leastConn {
				t.Errorf("least_conn: max/mean reached %.3f, want <= %.2f", gotLC, tc.leastConn)
			}
			if gotP2C > tc.p2c {
				t.Errorf("p2c: max/mean reached %.3f, want <= %.2f", gotP2C, tc.p2c)
			}
			if gotRandom <= tc.p2c {
				t.Errorf("the bound is too loose: random choice stays at %.3f", gotRandom)
			}
		})
	}
}

// TestWeightedDraw: p2c's alias draw and both of its excluding draws pick
// backends in proportion to weight, including a weight of 1 against 10000.
func TestWeightedDraw(t *testing.T) {
	for _, ws := range [][]int{{1, 10000}, {1, 2, 3, 4}, {10000, 10000, 1, 5000}, {7}} {
		t.Run(fmt.Sprint(ws), func(t *testing.T) {
			bs := backends(len(ws), func(i int) int { return ws[i] })
			p := newP2C(bs, 99).NewPicker().(*p2cPicker)
			var total float64
			for _, w := range ws {
				total += float64(w)
			}
			const draws = 2_000_000
			got := make([]float64, len(ws))
			for range draws {
				got[p.p.draw(&p.r)]++
			}
			for i, w := range ws {
				want := float64(w) / total
				// five standard deviations of a binomial share, at least
				// one draw
				tol := 5*sqrt(want*(1-want)/draws) + 1.0/draws
				if f := got[i] / draws; f < want-tol || f > want+tol {
					t.Errorf("backend %d (weight %d): share %.6f, want %.6f±%.6f", i, w, f, want, tol)
				}
			}
		})
	}
}

func sqrt(x float64) float64 {
	z := x
	for range 50 {
		if z == 0 {
			return 0
		}
		z = (z + x/z) / 2
	}
	return z
}

// TestLeastConnTies: backends with the same load per weight share the
// picks evenly, whether all of them tie or only a few, and a lighter
// backend always wins.
func TestLeastConnTies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		active []int64
		want   []int // the backends that tie for the lightest load
	}{
		{"all idle", []int64{0, 0, 0, 0, 0, 0, 0, 0}, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"three of six", []int64{4, 1, 7, 1, 2, 1}, []int{1, 3, 5}},
		{"one lightest", []int64{3, 3, 0, 3}, []int{2}},
		{"tie at the end", []int64{5, 2, 9, 2}, []int{1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := backends(len(tc.active), func(int) int { return 100 })
			for i, a := range tc.active {
				bs[i].Active.Store(a)
			}
			lc := newLeastConn(bs, 7).NewPicker()
			const picks = 400_000
			got := make([]float64, len(bs))
			for range picks {
				got[lc.Pick(0, &Tried{})]++
			}
			want := 1 / float64(len(tc.want))
			tol := 5*sqrt(want*(1-want)/picks) + 1.0/picks
			in := map[int]bool{}
			for _, i := range tc.want {
				in[i] = true
				if f := got[i] / picks; f < want-tol || f > want+tol {
					t.Errorf("backend %d: share %.4f, want %.4f±%.4f", i, f, want, tol)
				}
			}
			for i, n := range got {
				if !in[i] && n > 0 {
					t.Errorf("backend %d (active %d) picked %v times", i, tc.active[i], n)
				}
			}
		})
	}
}
