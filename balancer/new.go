package balancer

import (
	"errors"
	"fmt"
	"math/rand/v2"
)

// The algorithm names accepted by New, as written in a pool's config.
const (
	AlgorithmMaglev    = "maglev"
	AlgorithmLeastConn = "least_conn"
	AlgorithmWRR       = "wrr"
	AlgorithmP2C       = "p2c"
)

// MaxWeight is the largest backend weight; the smallest is 1. The bound
// keeps weight products (least_conn, p2c) and weight sums far from overflow.
const MaxWeight = 10000

// Sentinel errors returned, wrapped with details, by New.
var (
	// ErrUnknownAlgorithm means the algorithm name is none of
	// AlgorithmMaglev, AlgorithmLeastConn, AlgorithmWRR and AlgorithmP2C.
	ErrUnknownAlgorithm = errors.New("balancer: unknown algorithm")
	// ErrTableSize means Options.TableSize is not a prime in
	// [MinTableSize, MaxTableSize], or is smaller than the number of
	// backends.
	ErrTableSize = errors.New("balancer: invalid maglev table size")
	// ErrBackend means a backend's weight is outside 1..MaxWeight, its
	// Active counter is nil where the algorithm reads it, or, for maglev,
	// its name is empty or not unique.
	ErrBackend = errors.New("balancer: invalid backend")
)

// New builds the balancer named by algorithm over backends. The indices
// that its Pickers return are indices into backends. The balancer keeps no
// reference to the slice, only to the Active counters, so the caller may
// reuse it. An empty backends gives a balancer whose Pickers always return
// -1 (the pool's no_backend case).
//
// New runs off the hot path, whenever membership, weight or state changes;
// the caller publishes the result atomically.
func New(algorithm string, backends []Backend, opts Options) (Balancer, error) {
	var needActive, needName bool
	switch algorithm {
	case AlgorithmMaglev:
		needName = true
		if _, err := tableSize(opts.TableSize, len(backends)); err != nil {
			return nil, err
		}
	case AlgorithmLeastConn, AlgorithmP2C:
		needActive = true
	case AlgorithmWRR:
	default:
		return nil, fmt.Errorf("%w %q (want %s, %s, %s or %s)", ErrUnknownAlgorithm, algorithm, AlgorithmMaglev, AlgorithmLeastConn, AlgorithmWRR, AlgorithmP2C)
	}
	if err := validate(backends, needActive, needName); err != nil {
		return nil, err
	}
	if len(backends) == 0 {
		return none{}, nil
	}
	switch algorithm {
	case AlgorithmMaglev:
		return NewMaglev(backends, opts)
	case AlgorithmLeastConn:
		return newLeastConn(backends, rand.Uint64()), nil
	case AlgorithmP2C:
		return newP2C(backends, rand.Uint64()), nil
	default:
		return newWRR(backends), nil
	}
}

func validate(backends []Backend, needActive, needName bool) error {
	var seen map[string]bool
	if needName {
		seen = make(map[string]bool, len(backends))
	}
	for i, b := range backends {
		if b.Weight < 1 || b.Weight > MaxWeight {
			return fmt.Errorf("%w: backend %d (%q): weight %d outside 1..%d", ErrBackend, i, b.Name, b.Weight, MaxWeight)
		}
		if needActive && b.Active == nil {
			return fmt.Errorf("%w: backend %d (%q): nil Active counter", ErrBackend, i, b.Name)
		}
		if needName {
			// Maglev orders backends by name; two equal names would make
			// the table depend on the input order.
			if b.Name == "" {
				return fmt.Errorf("%w: backend %d: empty name", ErrBackend, i)
			}
			if seen[b.Name] {
				return fmt.Errorf("%w: duplicate name %q", ErrBackend, b.Name)
			}
			seen[b.Name] = true
		}
	}
	return nil
}

// none is the balancer of a pool without eligible backends, and its own
// picker.
type none struct{}

var _ Balancer = none{}

// NewPicker returns the balancer itself: it has no state.
func (none) NewPicker() Picker { return none{} }

// Pick always reports that no backend is available.
func (none) Pick(uint64, *Tried) int { return -1 }

// allTried reports whether tried covers every index in [0, n). Tried holds
// at most MaxTried entries, so for larger pools this is false without a
// scan.
func allTried(tried *Tried, n int) bool {
	if tried.Len() < n {
		return false
	}
	for i := 0; i < n; i++ {
		if !tried.Has(i) {
			return false
		}
	}
	return true
}

// gcd is Euclid's greatest common divisor of two positive numbers.
func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
