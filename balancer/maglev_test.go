package balancer

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"testing"
)

// adams is the reference for the weighted populate's counts: turn j of
// backend k comes at time j/w_k, ties in name order, and the first m turns
// are taken. O(m·n), for tests only. bs must be sorted by name.
func adams(bs []Backend, m int) []int {
	turns := make([]int, len(bs))
	for ; m > 0; m-- {
		best := 0
		for k := 1; k < len(bs); k++ {
			if turns[k]*bs[best].Weight < turns[best]*bs[k].Weight {
				best = k
			}
		}
		turns[best]++
	}
	return turns
}

func TestMaglevBalance(t *testing.T) {
	for _, tc := range []struct{ n, m int }{
		{1, 65537}, {2, 65537}, {7, 65537}, {100, 65537}, {1000, 65537},
		{1000, 655373}, {5, 5}, {3, 7},
	} {
		t.Run(fmt.Sprintf("n=%d/m=%d", tc.n, tc.m), func(t *testing.T) {
			mg := mustMaglev(t, backends(tc.n, one), tc.m)
			lo, hi := tc.m/tc.n, (tc.m+tc.n-1)/tc.n
			for i, c := range counts(mg) {
				if c < lo || c > hi {
					t.Errorf("backend %d owns %d slots, want %d or %d", i, c, lo, hi)
				}
			}
		})
	}
}

// TestMaglevWeights checks the bound: with M > 100·N, each share is
// within 1% of its weight's, and the counts are exactly Adams'.
func TestMaglevWeights(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		desc string
		n, m int
		w    func(i int) int
	}{
		{"1..10", 100, 65537, func(int) int { return 1 + r.IntN(10) }},
		{"1..3", 300, 65537, func(int) int { return 1 + r.IntN(3) }},
		{"powers of 2", 12, 65537, func(i int) int { return 1 << i }},
		{"1..10000 at 655373", 50, 655373, func(int) int { return 1 + r.IntN(MaxWeight) }},
		{"two values", 64, 65537, func(i int) int { return 1 + 99*(i%2) }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bs := backends(tc.n, tc.w)
			mg := mustMaglev(t, bs, tc.m)
			total := 0
			for _, b := range bs {
				total += b.Weight
			}
			got := counts(mg)
			for i, b := range bs {
				share := float64(tc.m) * float64(b.Weight) / float64(total)
				if share < 100 {
					// Below 100 slots one slot is over 1%; the bound is
					// then Adams' (share - N·w/W, share + 1).
					if d := float64(got[i]) - share; d >= 1 || d <= -float64(tc.n*b.Weight)/float64(total) {
						t.Errorf("%s weight %d: %d slots, share %.2f", b.Name, b.Weight, got[i], share)
					}
					continue
				}
				if dev := float64(got[i])/share - 1; dev > 0.01 || dev < -0.01 {
					t.Errorf("%s weight %d: %d slots, share %.1f (%+.2f%%)", b.Name, b.Weight, got[i], share, 100*dev)
				}
			}
			if tc.n*tc.m <= 100*65537 { // the reference is O(N·M)
				if want := adams(bs, tc.m); !slices.Equal(got, want) {
					t.Errorf("counts differ from Adams' apportionment:\n got %v\nwant %v", got, want)
				}
			}
		})
	}
}

// TestMaglevWeightOne: a backend of weight 1 among backends of weight 10000
// still owns slots, its share when that is at least one slot.
func TestMaglevWeightOne(t *testing.T) {
	for _, tc := range []struct {
		desc      string
		heavy     int
		m         int
		min, max_ int
	}{
		{"1 vs 10000", 1, 65537, 6, 7},            // share 6.55
		{"1 vs 9x10000", 9, 65537, 1, 1},          // share 0.73
		{"1 vs 99x10000", 99, 655373, 1, 1},       // share 0.66
		{"1 vs 3x10000 large", 3, 655373, 21, 22}, // share 21.8
	} {
		t.Run(tc.desc, func(t *testing.T) {
			bs := backends(tc.heavy+1, func(i int) int {
				if i == tc.heavy {
					return 1
				}
				return MaxWeight
			})
			mg := mustMaglev(t, bs, tc.m)
			if c := counts(mg)[tc.heavy]; c < tc.min || c > tc.max_ {
				t.Errorf("weight 1 owns %d slots, want %d..%d", c, tc.min, tc.max_)
			}
			hits := 0
			for k := uint64(0); k < uint64(tc.m); k++ { // one key per slot
				if mg.Pick(k, nil) == tc.heavy {
					hits++
				}
			}
			if hits == 0 {
				t.Error("no key reaches the weight-1 backend")
			}
		})
	}
}

// TestMaglevDisruption checks the paper's claim on our hashes: removing
// one of 100 backends at M = 65537 moves at most 2% of the slots (ideal
// 1%), and adding it back restores the table exactly.
func TestMaglevDisruption(t *testing.T) {
	const n, m = 100, 65537
	bs := backends(n, one)
	before := names(mustMaglev(t, bs, m), bs)
	worst := 0.0
	for gone := 0; gone < n; gone += 7 {
		rest := slices.Delete(slices.Clone(bs), gone, gone+1)
		after := names(mustMaglev(t, rest, m), rest)
		moved := 0
		for s := range before {
			if before[s] != after[s] {
				moved++
			}
		}
		frac := float64(moved) / m
		worst = max(worst, frac)
		if frac > 0.02 {
			t.Errorf("removing %s moved %.2f%% of slots, want <= 2%%", bs[gone].Name, 100*frac)
		}
		back := append(rest, bs[gone])
		if again := names(mustMaglev(t, back, m), back); !slices.Equal(again, before) {
			t.Errorf("re-adding %s did not restore the table", bs[gone].Name)
		}
	}
	t.Logf("worst disruption %.2f%% (ideal 1%%)", 100*worst)
}

// TestMaglevDeterminism: the table depends on the set of backends, not on
// the order they are given in.
func TestMaglevDeterminism(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	bs := backends(50, func(i int) int { return 1 + i%5 })
	want := names(mustMaglev(t, bs, 4099), bs)
	for range 5 {
		sh := slices.Clone(bs)
		r.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
		if got := names(mustMaglev(t, sh, 4099), sh); !slices.Equal(got, want) {
			t.Fatal("table depends on input order")
		}
	}
}

// TestGolden pins the table and the key hash. These values must never
// change: every lbd instance of a fleet, whatever its version, must build
// the same table from the same pool and hash a client to the same key, or
// an ECMP fleet splits clients across backends during an upgrade. If this
// test fails, the change is wrong, not the test.
func TestGolden(t *testing.T) {
	bs := []Backend{
		{Name: "10.0.0.3:80", Weight: 1},
		{Name: "10.0.0.1:80", Weight: 1},
		{Name: "10.0.0.2:80", Weight: 2},
		{Name: "web-a", Weight: 5},
		{Name: "a-very-long-backend-name.example.com:8443", Weight: 1},
	}
	mg := mustMaglev(t, bs, 0)
	h := fnv.New64a()
	for s := 0; s < mg.TableSize(); s++ {
		h.Write([]byte{byte(mg.Owner(s))})
	}
	first := make([]int, 30)
	for s := range first {
		first[s] = mg.Owner(s)
	}
	const wantSum = uint64(0xa80567eb88471553)
	wantFirst := []int{1, 2, 3, 3, 3, 3, 2, 3, 0, 3, 0, 3, 3, 2, 1, 3, 3, 4, 2, 3, 3, 1, 0, 4, 3, 2, 3, 3, 3, 3}
	if got := h.Sum64(); got != wantSum {
		t.Errorf("table hash = %#x, want %#x", got, wantSum)
	}
	if !slices.Equal(first, wantFirst) {
		t.Errorf("first slots = %#v, want %#v", first, wantFirst)
	}

	small := mustMaglev(t, bs[:3], 13)
	tab := make([]int, 13)
	for s := range tab {
		tab[s] = small.Owner(s)
	}
	if want := []int{1, 0, 1, 2, 2, 0, 0, 2, 2, 2, 1, 2, 1}; !slices.Equal(tab, want) {
		t.Errorf("13-slot table = %#v, want %#v", tab, want)
	}

	for _, tc := range []struct {
		addr     string
		port     uint16
		withPort bool
		want     uint64
	}{
		{"192.0.2.1", 0, false, 0x9ebd0f78a9f9061},
		{"192.0.2.1", 4242, true, 0x77270489a9a46da0},
		{"2001:db8::1", 0, false, 0x4ce325fb367e0f5a},
		{"2001:db8::1", 443, true, 0x7e19fd3b20686ca7},
	} {
		if got := HashKey(mustAddr(t, tc.addr), tc.port, tc.withPort); got != tc.want {
			t.Errorf("HashKey(%s, %d, %v) = %#x, want %#x", tc.addr, tc.port, tc.withPort, got, tc.want)
		}
	}
	if got, want := hashString("backend-0001", seedOffset), uint64(0xed0a5fc5bdb2d42b); got != want {
		t.Errorf("hashString = %#x, want %#x", got, want)
	}
}

func TestMaglevPickFollowsTable(t *testing.T) {
	bs := backends(10, func(i int) int { return 1 + i })
	mg := mustMaglev(t, bs, 1009)
	for k := uint64(0); k < 5000; k++ {
		key := mix64(k)
		if got, want := mg.Pick(key, nil), mg.Owner(mg.Slot(key)); got != want {
			t.Fatalf("Pick(%#x) = %d, table says %d", key, got, want)
		}
	}
}

// TestMaglevRetry: the retry of a key is deterministic, and the keys of a
// tried backend spread over the others in proportion to their shares.
func TestMaglevRetry(t *testing.T) {
	bs := backends(4, func(i int) int { return []int{1, 1, 2, 4}[i] })
	mg := mustMaglev(t, bs, 65537)
	var tried Tried
	tried.Add(3)
	got := make([]int, 4)
	for k := uint64(0); k < 200000; k++ {
		key := mix64(k)
		b := mg.Pick(key, &tried)
		if b2 := mg.Pick(key, &tried); b2 != b {
			t.Fatalf("retry of %#x gave %d then %d", key, b, b2)
		}
		got[b]++
	}
	if got[3] != 0 {
		t.Fatalf("tried backend picked %d times", got[3])
	}
	for i, want := range []float64{0.25, 0.25, 0.5} {
		if f := float64(got[i]) / 200000; f < want-0.02 || f > want+0.02 {
			t.Errorf("backend %d got %.3f of retries, want %.2f", i, f, want)
		}
	}
}

func TestTableSize(t *testing.T) {
	for _, tc := range []struct {
		desc string
		size int
		n    int
		ok   bool
	}{
		{"default", 0, 10, true},
		{"prime", 655373, 10, true},
		{"smallest", 2, 2, true},
		{"not prime", 65536, 10, false},
		{"one", 1, 1, false},
		{"negative", -7, 1, false},
		{"too large", 16777259, 1, false},
		{"fewer slots than backends", 7, 8, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := NewMaglev(backends(tc.n, one), Options{TableSize: tc.size})
			if tc.ok != (err == nil) || err != nil && !errors.Is(err, ErrTableSize) {
				t.Errorf("size %d, %d backends: err = %v", tc.size, tc.n, err)
			}
		})
	}
}

// TestMaglevWide covers the 32-bit table used past 65536 backends.
func TestMaglevWide(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a table of 70000 backends")
	}
	const n, m = 70000, 140009
	mg := mustMaglev(t, backends(n, one), m)
	if mg.t32 == nil {
		t.Fatal("expected 32-bit entries")
	}
	for i, c := range counts(mg) {
		if c < m/n || c > m/n+1 {
			t.Fatalf("backend %d owns %d slots", i, c)
		}
	}
}

// TestMaglevEqualWeightsPaths: the weighted populate, given equal weights,
// is the paper's round robin, so a pool whose weights become equal does not
// reshuffle when it switches to the fast path.
func TestMaglevEqualWeightsPaths(t *testing.T) {
	for _, n := range []int{1, 3, 100} {
		bs := backends(n, func(int) int { return 7 })
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		a, b := make([]uint16, 4099), make([]uint16, 4099)
		populateEqual(a, newFiller(4099, bs, order), order)
		populateWeighted(b, newFiller(4099, bs, order), bs, order)
		if !slices.Equal(a, b) {
			t.Errorf("n=%d: the two populates differ", n)
		}
	}
}
