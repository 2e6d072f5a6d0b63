// Command maglev reproduces the hashing evaluation of the Maglev paper
// (Eisenbud et al., NSDI 2016, section 5.3) on lbd's Maglev: it compares
// Maglev with a consistent-hash ring with virtual nodes (Karger) and with
// rendezvous hashing on the same backends, for balance, disruption when
// backends fail, build time and pick time, and writes the results as a
// Markdown table and a PNG plot.
//
//	go run ./bench/maglev -out bench/results
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/balancer"
)

// The paper's section 5.3 figures for 1000 backends at M = 65537: the
// overprovisioning (max/mean - 1) that Karger and rendezvous hashing need.
const (
	paperKarger     = 29.7
	paperRendezvous = 49.5
)

func main() {
	n := flag.Int("n", 1000, "backends")
	sizesFlag := flag.String("sizes", "65537,655373", "Maglev table sizes (primes), also the number of keys placed by the other methods")
	vnodes := flag.Int("vnodes", 100, "points per backend on the Karger ring")
	trials := flag.Int("trials", 5, "random failure sets per failure count")
	sets := flag.Int("sets", 10, "backend sets (different names) over which balance is sampled")
	out := flag.String("out", "bench/results", "directory for maglev.md and maglev.png")
	flag.Parse()

	var sizes []int
	for _, s := range strings.Split(*sizesFlag, ",") {
		m, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			log.Fatalf("-sizes: %v", err)
		}
		sizes = append(sizes, m)
	}
	// Names as lbd gives unnamed backends: their address. Each set is a
	// different subnet, so the hashes and thus the tables differ.
	nameSets := make([][]string, max(*sets, 1))
	for s := range nameSets {
		nameSets[s] = make([]string, *n)
		for i := range nameSets[s] {
			nameSets[s][i] = fmt.Sprintf("10.%d.%d.%d:8080", s*4+i>>16, i>>8&0xff, i&0xff)
		}
	}
	fails := []int{1, max(1, *n/100), max(1, *n/20)}

	methods := []method{
		maglevMethod(),
		ringMethod(*vnodes),
		rendezvousMethod(),
	}
	var res results
	res.n, res.sizes, res.fails, res.vnodes, res.trials, res.sets = *n, sizes, fails, *vnodes, *trials, len(nameSets)
	for _, m := range sizes {
		for _, meth := range methods {
			log.Printf("%s, M = %d", meth.name, m)
			res.rows = append(res.rows, evaluate(meth, nameSets, m, fails, *trials))
		}
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	md := filepath.Join(*out, "maglev.md")
	png := filepath.Join(*out, "maglev.png")
	if err := os.WriteFile(md, []byte(res.markdown(strings.Join(os.Args[1:], " "))), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := writePlot(png, &res); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s and %s", md, png)
}

// method is one consistent hash under evaluation.
type method struct {
	name string
	// table places keys 0..m-1 on the backends: for Maglev the table
	// itself, for the others the backend of each key's hash.
	table func(names []string, m int) []int32
	// build times building the structure a pick reads; pick times one
	// pick on it.
	build func(names []string, m int) func(b *testing.B)
	pick  func(names []string, m int) func(b *testing.B)
	note  string
}

func backends(names []string) []balancer.Backend {
	bs := make([]balancer.Backend, len(names))
	for i, n := range names {
		bs[i] = balancer.Backend{Name: n, Weight: 1}
	}
	return bs
}

func maglevMethod() method {
	newTable := func(names []string, m int) *balancer.Maglev {
		mg, err := balancer.NewMaglev(backends(names), balancer.Options{TableSize: m})
		if err != nil {
			log.Fatal(err)
		}
		return mg
	}
	return method{
		name: "Maglev",
		table: func(names []string, m int) []int32 {
			mg := newTable(names, m)
			t := make([]int32, m)
			for s := range t {
				t[s] = int32(mg.Owner(s))
			}
			return t
		},
		build: func(names []string, m int) func(b *testing.B) {
			bs := backends(names)
			return func(b *testing.B) {
				for b.Loop() {
					if _, err := balancer.NewMaglev(bs, balancer.Options{TableSize: m}); err != nil {
						b.Fatal(err)
					}
				}
			}
		},
		pick: func(names []string, m int) func(b *testing.B) {
			var pk balancer.Picker = newTable(names, m).NewPicker()
			return pickBench(func(k uint64) int { return pk.Pick(k, nil) })
		},
		note: "lbd's balancer.Maglev: table build; pick = Picker.Pick",
	}
}

func ringMethod(vnodes int) method {
	return method{
		name: fmt.Sprintf("Karger ring (%d vnodes)", vnodes),
		table: func(names []string, m int) []int32 {
			r := newRing(names, vnodes)
			t := make([]int32, m)
			for i := range t {
				t[i] = int32(r.lookup(slotPosition(i, m)))
			}
			return t
		},
		build: func(names []string, _ int) func(b *testing.B) {
			return func(b *testing.B) {
				for b.Loop() {
					newRing(names, vnodes)
				}
			}
		},
		pick: func(names []string, _ int) func(b *testing.B) {
			r := newRing(names, vnodes)
			return pickBench(r.lookup)
		},
		note: "build = hash and sort N·vnodes points; pick = binary search on the ring",
	}
}

func rendezvousMethod() method {
	return method{
		name: "Rendezvous",
		table: func(names []string, m int) []int32 {
			r := newRendezvous(names)
			t := make([]int32, m)
			for i := range t {
				t[i] = int32(r.lookup(keyHash(i)))
			}
			return t
		},
		build: func(names []string, _ int) func(b *testing.B) {
			return func(b *testing.B) {
				for b.Loop() {
					newRendezvous(names)
				}
			}
		},
		pick: func(names []string, _ int) func(b *testing.B) {
			r := newRendezvous(names)
			return pickBench(r.lookup)
		},
		note: "build = hash the N names; pick = N hashes, keep the largest",
	}
}

func pickBench(pick func(uint64) int) func(b *testing.B) {
	return func(b *testing.B) {
		k, sum := uint64(0), 0
		for b.Loop() {
			k += 0x9e3779b97f4a7c15
			sum += pick(mix(k))
		}
		if sum < 0 {
			b.Fatal("no backend")
		}
	}
}

// row is one method at one size.
type row struct {
	method string
	note   string
	m      int
	// per-backend counts of the m keys
	min, max int
	mean     float64
	// overprovisioning in percent for each backend set, the first being
	// the one of min and max
	overprovSets []float64
	// for each failure count: the mean over trials of the fraction of keys
	// that moved, and of the fraction owned by the failed backends (the
	// least that must move)
	moved, ideal, worst []float64
	build               time.Duration
	pickNs              float64
}

func (r row) overprov() float64 { return 100 * (float64(r.max)/r.mean - 1) }

func (r row) setMean() float64 {
	var s float64
	for _, o := range r.overprovSets {
		s += o
	}
	return s / float64(len(r.overprovSets))
}

// balance is the per-backend count of keys in a table.
func balance(table []int32, n int) (lo, hi int) {
	counts := make([]int, n)
	for _, b := range table {
		counts[b]++
	}
	return slices.Min(counts), slices.Max(counts)
}

func evaluate(meth method, nameSets [][]string, m int, fails []int, trials int) row {
	names := nameSets[0]
	r := row{method: meth.name, note: meth.note, m: m}
	before := meth.table(names, m)
	r.min, r.max = balance(before, len(names))
	r.mean = float64(m) / float64(len(names))
	for _, set := range nameSets {
		t := before
		if &set[0] != &names[0] {
			t = meth.table(set, m)
		}
		_, hi := balance(t, len(set))
		r.overprovSets = append(r.overprovSets, 100*(float64(hi)/r.mean-1))
	}

	for _, f := range fails {
		var moved, ideal, worst float64
		for t := 0; t < trials; t++ {
			rng := rand.New(rand.NewPCG(uint64(f), uint64(t)))
			gone := map[string]bool{}
			for _, i := range rng.Perm(len(names))[:f] {
				gone[names[i]] = true
			}
			var rest []string
			for _, nm := range names {
				if !gone[nm] {
					rest = append(rest, nm)
				}
			}
			after := meth.table(rest, m)
			mv, must := 0, 0
			for k := range before {
				if names[before[k]] != rest[after[k]] {
					mv++
				}
				if gone[names[before[k]]] {
					must++
				}
			}
			moved += float64(mv) / float64(m)
			ideal += float64(must) / float64(m)
			worst = max(worst, float64(mv)/float64(m))
		}
		r.moved = append(r.moved, moved/float64(trials))
		r.ideal = append(r.ideal, ideal/float64(trials))
		r.worst = append(r.worst, worst)
	}
	r.build = time.Duration(testing.Benchmark(meth.build(names, m)).NsPerOp())
	pb := testing.Benchmark(meth.pick(names, m))
	r.pickNs = float64(pb.T.Nanoseconds()) / float64(max(pb.N, 1))
	return r
}

type results struct {
	n, vnodes, trials, sets int
	sizes, fails            []int
	rows                    []row
}

func (res *results) find(prefix string, m int) *row {
	for i := range res.rows {
		if strings.HasPrefix(res.rows[i].method, prefix) && res.rows[i].m == m {
			return &res.rows[i]
		}
	}
	return nil
}

func pct(x float64) string { return fmt.Sprintf("%.2f%%", 100*x) }

func (res *results) markdown(args string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Maglev hashing against Karger and rendezvous hashing\n\n")
	w("Generated by `go run ./bench/maglev %s` (Go %s, %s/%s, %d CPUs). ", args, strings.TrimPrefix(runtime.Version(), "go"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	w("It repeats the evaluation of section 5.3 of the Maglev paper (Eisenbud et al., NSDI 2016) with lbd's `balancer.Maglev`: N = %d equally weighted backends, named by address.\n\n", res.n)
	w("- **Maglev**: the lookup table of M slots; a key's slot is key mod M, so the table's counts are the shares of the key space.\n")
	w("- **Karger**: a consistent-hash ring with %d virtual nodes per backend (%d points in all), cut into the same M slots: slot i, at ring position ⌊i·2^64/M⌋, goes to the next point. ", res.vnodes, res.vnodes*res.n)
	w("A backend's count is then its share of the ring, as it is for client keys; hashing each slot to a random ring position instead would add the counting noise of rendezvous below on top of it.\n")
	w("- **Rendezvous** (highest random weight): slot i goes to the backend with the largest hash(backend, hash(i)). Its expected shares are equal; the imbalance is that of throwing M balls into N bins.\n\n")
	w("All three fill a lookup table of M entries, as the paper does, so a pick could cost one load for each. The pick times below are for each method's own lookup, without a table.\n\n")

	w("## Balance\n\n")
	w("Keys (table entries) per backend. Overprovisioning is max/mean − 1: the spare capacity the busiest backend needs. ")
	w("Min and max are for the first backend set; the overprovisioning is also given as the mean and range over %d backend sets with different names, since one set is one sample of a random process.\n\n", res.sets)
	w("The expected column is what an ideal uniform hash gives on average: for the ring, the largest of N shares of a circle cut at N·vnodes random points (each an Erlang sum of vnodes arcs); for rendezvous, the largest of N Poisson(M/N) counts; for Maglev, ⌈M/N⌉.\n\n")
	w("| method | M | min | max | mean | max/mean | overprovisioning | over %d sets: mean [range] | expected (ideal hash) | paper (M = 65537) |\n|---|---|---|---|---|---|---|---|---|---|\n", res.sets)
	for _, r := range res.rows {
		paper := "–"
		if r.m == 65537 {
			switch {
			case strings.HasPrefix(r.method, "Maglev"):
				paper = "≈ 0 (near-perfect)"
			case strings.HasPrefix(r.method, "Karger"):
				paper = fmt.Sprintf("%.1f%%", paperKarger)
			case strings.HasPrefix(r.method, "Rendezvous"):
				paper = fmt.Sprintf("%.1f%%", paperRendezvous)
			}
		}
		w("| %s | %d | %d | %d | %.1f | %.3f | %.1f%% | %.1f%% [%.1f–%.1f] | %.1f%% | %s |\n", r.method, r.m, r.min, r.max, r.mean, float64(r.max)/r.mean, r.overprov(),
			r.setMean(), slices.Min(r.overprovSets), slices.Max(r.overprovSets), res.expected(r), paper)
	}

	w("\n## Disruption\n\n")
	w("Fraction of keys whose backend changes when some backends fail, averaged over %d random failure sets (worst set in brackets). ", res.trials)
	w("Ideal is the fraction the failed backends owned, which must move.\n\n")
	w("| method | M |")
	for _, f := range res.fails {
		w(" %d failed (%s) |", f, pct(float64(f)/float64(res.n)))
	}
	w("\n|---|---|")
	for range res.fails {
		w("---|")
	}
	w("\n")
	for _, r := range res.rows {
		w("| %s | %d |", r.method, r.m)
		for i := range res.fails {
			w(" %s [%s] (ideal %s) |", pct(r.moved[i]), pct(r.worst[i]), pct(r.ideal[i]))
		}
		w("\n")
	}

	w("\n## Time\n\n")
	w("Single-threaded, one run of `testing.Benchmark` each, on a machine shared with other work: compare within this table only.\n\n")
	w("| method | M | build | pick | what is timed |\n|---|---|---|---|---|\n")
	for _, r := range res.rows {
		w("| %s | %d | %s | %.1f ns | %s |\n", r.method, r.m, fmtDur(r.build), r.pickNs, r.note)
	}

	w("\n## Against the paper\n\n")
	b.WriteString(res.verdict())
	w("\n![balance and disruption](maglev.png)\n")
	return b.String()
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Microsecond:
		return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
	}
	return fmt.Sprintf("%d ns", d.Nanoseconds())
}

// verdict states, from the figures, whether they agree with the paper.
func (res *results) verdict() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	for _, m := range res.sizes {
		mg := res.find("Maglev", m)
		if mg == nil {
			continue
		}
		lo, hi := m/res.n, (m+res.n-1)/res.n
		w("- **Maglev, M = %d**: every backend owns %d to %d slots (max/mean %.3f, overprovisioning %.1f%%, %.1f%% at most over the %d sets). ",
			m, mg.min, mg.max, float64(mg.max)/mg.mean, mg.overprov(), slices.Max(mg.overprovSets), res.sets)
		if mg.min >= lo && mg.max <= hi && slices.Max(mg.overprovSets) <= res.expected(*mg)+1e-9 {
			w("That is ⌊M/N⌋ or ⌈M/N⌉, the best any table can do: **agrees** with the paper's near-perfect balance.\n")
		} else {
			w("That is worse than ⌊M/N⌋..⌈M/N⌉: **disagrees** with the paper.\n")
		}
	}
	k, r := res.find("Karger", 65537), res.find("Rendezvous", 65537)
	if k != nil && r != nil {
		within := func(x *row, paper float64) string {
			if paper >= slices.Min(x.overprovSets)-2 && paper <= slices.Max(x.overprovSets)+2 {
				return "within (±2 points) the range we measured"
			}
			return "outside the range we measured"
		}
		w("- **Karger and rendezvous, M = 65537**: %.1f%% and %.1f%% overprovisioning on average over %d sets (expected for ideal hashes: %.1f%% and %.1f%%), against the paper's %.1f%% and %.1f%%. ",
			k.setMean(), r.setMean(), res.sets, res.expected(*k), res.expected(*r), paperKarger, paperRendezvous)
		w("The paper's Karger figure is %s, its rendezvous figure %s. ", within(k, paperKarger), within(r, paperRendezvous))
		if k.setMean() > 10 && r.setMean() > 10 {
			w("**Agrees** on the point that matters: with about %d keys per backend both need tens of percent of spare capacity where Maglev needs %.1f%%. ", 65537/res.n, res.find("Maglev", 65537).overprov())
		} else {
			w("**Disagrees**: the paper finds both far worse balanced than this. ")
		}
		w("Single figures vary from set to set by several points, and the ring's depends on the number of virtual nodes (its expected overprovisioning falls roughly as 1/√vnodes), so the paper's exact numbers, one sample with hashes we do not know, are not reproducible to the decimal.\n")
	}
	if len(res.sizes) > 1 {
		big := res.sizes[len(res.sizes)-1]
		if kb, rb, mb := res.find("Karger", big), res.find("Rendezvous", big), res.find("Maglev", big); kb != nil && rb != nil && mb != nil {
			w("- **M = %d**: Karger %.1f%%, rendezvous %.1f%%, Maglev %.1f%%. ", big, kb.setMean(), rb.setMean(), mb.setMean())
			w("Ten times the keys per backend shrinks rendezvous' counting noise; the ring's imbalance is that of its arcs, which a finer table does not change. Neither approaches Maglev.\n")
		}
	}
	if len(res.fails) > 0 {
		last := len(res.fails) - 1
		w("- **Disruption**: the ring and rendezvous move only the failed backends' keys, the ideal, by construction. Maglev trades some of that for balance:")
		var prev *row
		for _, m := range res.sizes {
			mg := res.find("Maglev", m)
			if mg == nil {
				continue
			}
			w(" at M = %d it moves %s of keys when 1 backend fails (ideal %s) and %s when %d fail (ideal %s);",
				m, pct(mg.moved[0]), pct(mg.ideal[0]), pct(mg.moved[last]), res.fails[last], pct(mg.ideal[last]))
			if prev != nil {
				if mg.moved[0] < prev.moved[0] {
					w(" as in the paper, the larger table is the more resilient;")
				} else {
					w(" unlike the paper, the larger table is not the more resilient;")
				}
			}
			prev = mg
		}
		w(" the excess over the ideal is what Maglev's connection tracking absorbs for established flows.\n")
	}
	return b.String()
}
