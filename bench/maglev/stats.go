package main

import (
	"math"
	"math/bits"
	"strings"
)

// slotPosition is the ring position of slot i of m: ⌊i·2^64/m⌋.
func slotPosition(i, m int) uint64 {
	q, _ := bits.Div64(uint64(i), 0, uint64(m))
	return q
}

// expected is the overprovisioning, in percent, that an ideal uniform hash
// gives on average for the row's method, against which the measured figure
// (one sample of a random process) can be judged.
func (res *results) expected(r row) float64 {
	switch {
	case strings.HasPrefix(r.method, "Maglev"):
		return 100 * (math.Ceil(r.mean)/r.mean - 1)
	case strings.HasPrefix(r.method, "Karger"):
		return 100 * (expMaxErlang(res.vnodes, res.n) - 1)
	default:
		return 100 * (expMaxPoisson(r.mean, res.n)/r.mean - 1)
	}
}

// expMaxPoisson is E[max] of n independent Poisson(λ) counts, the
// balls-into-bins approximation of rendezvous hashing: the sum over k of
// P(max > k) = 1 - F(k)^n.
func expMaxPoisson(lambda float64, n int) float64 {
	var e, cdf float64
	kmax := int(lambda + 40*math.Sqrt(lambda) + 100)
	for k := 0; k < kmax; k++ {
		lg, _ := math.Lgamma(float64(k + 1))
		cdf += math.Exp(float64(k)*math.Log(lambda) - lambda - lg)
		e += 1 - math.Pow(min(cdf, 1), float64(n))
	}
	return e
}

// expMaxErlang is E[max]/mean of the ring shares of n backends with v points
// each: a share, in units of the mean, is close to Erlang(v, rate v)
// distributed, so E[max] is the integral over x of 1 - F(x)^n.
func expMaxErlang(v, n int) float64 {
	const dx = 1e-4
	var e float64
	for x := dx / 2; x < 1+40/math.Sqrt(float64(v)); x += dx {
		// F(x) = 1 - Σ_{j<v} e^{-vx} (vx)^j / j!
		y, tail := float64(v)*x, 0.0
		for j := 0; j < v; j++ {
			lg, _ := math.Lgamma(float64(j + 1))
			tail += math.Exp(-y + float64(j)*math.Log(y) - lg)
		}
		e += (1 - math.Pow(max(0, 1-tail), float64(n))) * dx
	}
	return e
}
