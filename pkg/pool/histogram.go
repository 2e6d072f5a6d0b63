package pool

import (
	"sync/atomic"
	"time"
)

// ConnectBuckets are the upper bounds, in seconds, of the connect-time
// histogram (lbd_backend_connect_duration_seconds): from 100µs, a
// connect on the same host, to 5s, past any sane connect_timeout.
var ConnectBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

var connectBucketNanos = func() []int64 {
	out := make([]int64, len(ConnectBuckets))
	for i, b := range ConnectBuckets {
		out[i] = int64(b * float64(time.Second))
	}
	return out
}()

// loopHistogram is one loop's connect-time histogram. Only that loop
// writes it.
type loopHistogram struct {
	counts [16]atomic.Uint64 // one per bucket, and the last for +Inf
	sum    atomic.Int64      // nanoseconds
	_      [56]byte
}

// connectHistogram holds a pool's connect times, per loop. It outlives a
// reload: the new pool takes over the old one's.
type connectHistogram struct {
	loops []loopHistogram
}

// ObserveConnect records how long a successful connect took, from loop.
func (p *Pool) ObserveConnect(loop int, d time.Duration) {
	h := &p.hist.loops[loop]
	n := int64(d)
	i := 0
	for i < len(connectBucketNanos) && n > connectBucketNanos[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(n)
}

// ConnectHistogram sums the loops' connect times: the count, the sum in
// seconds, and the cumulative count for each of ConnectBuckets.
func (p *Pool) ConnectHistogram() (count uint64, sum float64, cumulative []uint64) {
	per := make([]uint64, len(ConnectBuckets)+1)
	var nanos int64
	for i := range p.hist.loops {
		h := &p.hist.loops[i]
		for j := range per {
			per[j] += h.counts[j].Load()
		}
		nanos += h.sum.Load()
	}
	cumulative = make([]uint64, len(ConnectBuckets))
	var run uint64
	for j := range ConnectBuckets {
		run += per[j]
		cumulative[j] = run
	}
	count = run + per[len(ConnectBuckets)]
	return count, float64(nanos) / 1e9, cumulative
}
