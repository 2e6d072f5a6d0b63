package balancer

import (
	"fmt"
	"testing"
)

// BenchmarkPick measures one pick without tried backends, the data plane's
// common case, over pools of several sizes with unequal weights.
func BenchmarkPick(b *testing.B) {
	for _, alg := range []string{AlgorithmMaglev, AlgorithmWRR, AlgorithmP2C, AlgorithmLeastConn} {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/n=%d", alg, n), func(b *testing.B) {
				bs := backends(n, func(i int) int { return 1 + i%4 })
				for i := range bs {
					bs[i].Active.Store(int64(i * 7 % 13))
				}
				bal, err := New(alg, bs, Options{})
				if err != nil {
					b.Fatal(err)
				}
				pk := bal.NewPicker()
				b.ReportAllocs()
				key := uint64(1)
				sum := 0
				for b.Loop() {
					key = key*6364136223846793005 + 1442695040888963407
					sum += pk.Pick(key, nil)
				}
				if sum < 0 {
					b.Fatal("no backend")
				}
			})
		}
	}
}

// BenchmarkMaglevBuild measures a table build for 1000 equally weighted
// backends, and for 1000 backends of weights 1..100, per table size. The
// issue's budget is 5 ms at 65537 and 60 ms at 655373.
func BenchmarkMaglevBuild(b *testing.B) {
	for _, size := range []int{65537, 655373} {
		for _, weighted := range []bool{false, true} {
			w := one
			name := fmt.Sprintf("size=%d", size)
			if weighted {
				w = func(i int) int { return 1 + i*37%100 }
				name += "/weighted"
			}
			b.Run(name, func(b *testing.B) {
				bs := backends(1000, w)
				for b.Loop() {
					if _, err := NewMaglev(bs, Options{TableSize: size}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
