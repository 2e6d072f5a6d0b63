package balancer

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

var fuzzSizes = []int{2, 3, 5, 7, 13, 31, 251, 257, 1009, 4099, 65537}

// fuzzBackends turns fuzz input into backends: names separated by commas,
// weights from the bytes of ws (a weight of 1..MaxWeight per two bytes).
func fuzzBackends(spec string, ws []byte) []Backend {
	if spec == "" {
		return nil
	}
	parts := strings.Split(spec, ",")
	if len(parts) > 64 {
		parts = parts[:64]
	}
	bs := backends(len(parts), func(i int) int {
		if len(ws) == 0 {
			return 1
		}
		v := int(ws[(2*i)%len(ws)])<<8 | int(ws[(2*i+1)%len(ws)])
		return 1 + v%MaxWeight
	})
	for i := range bs {
		bs[i].Name = parts[i]
	}
	return bs
}

// FuzzMaglev builds tables from arbitrary names, weights and sizes and
// checks that a valid build is complete, apportioned as Adams' method
// says, independent of input order, and that picks honour tried.
func FuzzMaglev(f *testing.F) {
	f.Add("a,b,c", []byte{0, 5, 0, 1, 0, 1}, uint8(4), uint64(1), uint16(1))
	f.Add("web-1,web-2", []byte{0x27, 0x0f, 0, 0}, uint8(10), uint64(99), uint16(3))
	f.Add("x", []byte{}, uint8(0), uint64(0), uint16(0))
	f.Add("a,a", []byte{1}, uint8(3), uint64(7), uint16(2))
	f.Add("p,q,r,s,t,u,v,w,x,y,z", []byte{1, 2, 3}, uint8(2), uint64(5), uint16(0x7ff))
	f.Fuzz(func(t *testing.T, spec string, ws []byte, sizeIdx uint8, key uint64, triedMask uint16) {
		bs := fuzzBackends(spec, ws)
		size := fuzzSizes[int(sizeIdx)%len(fuzzSizes)]
		mg, err := NewMaglev(bs, Options{TableSize: size})
		if err != nil {
			if !errors.Is(err, ErrBackend) && !errors.Is(err, ErrTableSize) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(bs) == 0 {
			if mg.Pick(key, nil) != -1 {
				t.Fatal("empty table picks a backend")
			}
			return
		}
		got := counts(mg)
		if len(bs)*size <= 1<<20 {
			sorted := slices.Clone(bs)
			slices.SortFunc(sorted, func(a, b Backend) int { return strings.Compare(a.Name, b.Name) })
			want := adams(sorted, size)
			for k, b := range sorted {
				i := slices.IndexFunc(bs, func(x Backend) bool { return x.Name == b.Name })
				if got[i] != want[k] || got[i] == 0 {
					t.Fatalf("%q (weight %d) owns %d slots, Adams gives %d", b.Name, b.Weight, got[i], want[k])
				}
			}
		}
		rev := slices.Clone(bs)
		slices.Reverse(rev)
		if !slices.Equal(names(mustMaglev(t, rev, size), rev), names(mg, bs)) {
			t.Fatal("table depends on input order")
		}
		checkPick(t, mg, len(bs), key, triedMask)
	})
}

// checkPick asserts that Pick excludes the backends of triedMask and
// returns -1 exactly when all are excluded.
func checkPick(t *testing.T, b Picker, n int, key uint64, triedMask uint16) {
	var tried Tried
	for i := 0; i < 16; i++ {
		if triedMask&(1<<i) != 0 {
			tried.Add(i)
		}
	}
	got := b.Pick(key, &tried)
	if allTried(&tried, n) {
		if got != -1 {
			t.Fatalf("all %d tried, Pick = %d", n, got)
		}
		return
	}
	if got < 0 || got >= n || tried.Has(got) {
		t.Fatalf("tried %016b of %d, Pick = %d", triedMask, n, got)
	}
}

// FuzzPick builds every algorithm over arbitrary weights and checks the
// tried contract of Pick.
func FuzzPick(f *testing.F) {
	f.Add(uint8(0), []byte{1, 2, 3}, uint64(1), uint16(1))
	f.Add(uint8(1), []byte{0xff, 0xff, 0, 0}, uint64(2), uint16(0xffff))
	f.Add(uint8(2), []byte{9}, uint64(3), uint16(0))
	f.Add(uint8(3), []byte{0, 0, 0, 1, 0x27, 0x10}, uint64(4), uint16(5))
	f.Fuzz(func(t *testing.T, alg uint8, ws []byte, key uint64, triedMask uint16) {
		n := min(len(ws), 40)
		bs := backends(n, func(i int) int { return 1 + int(ws[i])*int(ws[(i+1)%n])%MaxWeight })
		for i := range bs {
			bs[i].Active.Store(int64(ws[(i+2)%n] % 7))
		}
		b, err := New(algorithms[int(alg)%len(algorithms)], bs, Options{TableSize: 1009})
		if err != nil {
			t.Fatal(err)
		}
		pk := b.NewPicker()
		for range 4 {
			checkPick(t, pk, n, key, triedMask)
			key = mix64(key)
		}
	})
}
