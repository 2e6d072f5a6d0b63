package l4

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/lbd-lb/lbd/internal/nettest"
)

type rec struct {
	slot int32
	gen  uint32
	free bool
}

func newRec(slot int32, gen uint32) *rec { return &rec{slot: slot, gen: gen} }

func recFree(r *rec) bool { return r.free }

func recGen(r *rec) uint32 { return r.gen }

// TestFreeListLowestFirst: the free list hands out the lowest free slot.
func TestFreeListLowestFirst(t *testing.T) {
	var h freeList
	in := rand.Perm(500)
	for _, s := range in {
		h.push(int32(s))
	}
	for want := range int32(500) {
		if got := h.pop(); got != want {
			t.Fatalf("pop %d: got %d", want, got)
		}
	}
	if got := h.pop(); got != -1 {
		t.Fatalf("empty pop: %d", got)
	}
}

// TestSlotTableShrinks: a flood grows the table; once it is over the table
// is cut down to the records still live, whatever order the flood's
// records were freed in. A live record never moves, so one left in the
// middle holds the table up to it until it ends too.
func TestSlotTableShrinks(t *testing.T) {
	for _, flood := range []int{minTable + 1, 10 * minTable, 100000} {
		var s slotTable[rec]
		var all []*rec
		for range flood {
			all = append(all, s.alloc(newRec))
		}
		if len(s.items) != flood {
			t.Fatalf("%d records after %d allocs", len(s.items), flood)
		}
		// Three records stay: two from the bottom, one from the middle.
		mid := int32(flood / 3)
		keep := map[int32]bool{0: true, 7: true, mid: true}
		for _, i := range rand.Perm(flood) {
			if r := all[i]; !keep[r.slot] {
				r.free = true
				s.release(r.slot, recFree, recGen)
			}
		}
		// The table is cut only once the highest live record is in its
		// lower half, so it ends below twice that record's slot.
		if n := len(s.items); n > max(2*(int(mid)+1), minTable) {
			t.Errorf("flood %d: %d records left, the highest live one in slot %d", flood, n, mid)
		}
		for slot := range keep {
			if s.at(slot) != all[slot] {
				t.Fatalf("flood %d: the live record of slot %d moved", flood, slot)
			}
		}
		if len(s.free) != len(s.items)-len(keep) {
			t.Fatalf("flood %d: %d free of %d records, %d live", flood, len(s.free), len(s.items), len(keep))
		}
		all[mid].free = true
		s.release(mid, recFree, recGen)
		if len(s.items) > minTable {
			t.Errorf("flood %d: %d records left for 2 live ones (cut down to at most %d)", flood, len(s.items), minTable)
		}
		// New records take the lowest free slots.
		if r := s.alloc(newRec); r.slot != 1 {
			t.Fatalf("flood %d: new record in slot %d, want 1", flood, r.slot)
		}
	}
}

// TestSlotTableNewGeneration: a record made again for a slot that was cut
// off carries a generation the old record's references do not have.
func TestSlotTableNewGeneration(t *testing.T) {
	var s slotTable[rec]
	var all []*rec
	for range 2 * minTable {
		all = append(all, s.alloc(newRec))
	}
	old := all[len(all)-1]
	for _, r := range all[1:] {
		r.free = true
		s.release(r.slot, recFree, recGen)
	}
	if s.at(old.slot) != nil {
		t.Fatalf("slot %d not cut off: table of %d", old.slot, len(s.items))
	}
	var again *rec
	for again == nil || again.slot < old.slot {
		again = s.alloc(newRec)
	}
	if again.slot != old.slot || again.gen == old.gen {
		t.Fatalf("slot %d made again with generation %d, the old one had %d", again.slot, again.gen, old.gen)
	}
}

// TestSlotTableSteady: steady churn below the table's size allocates no
// record and never cuts.
func TestSlotTableSteady(t *testing.T) {
	var s slotTable[rec]
	live := []*rec{}
	for range 2 * minTable {
		live = append(live, s.alloc(newRec))
	}
	made := len(s.items)
	allocs := testing.AllocsPerRun(1000, func() {
		i := rand.IntN(len(live))
		r := live[i]
		r.free = true
		s.release(r.slot, recFree, recGen)
		r = s.alloc(newRec)
		r.free = false
		live[i] = r
	})
	if allocs != 0 || len(s.items) != made {
		t.Fatalf("%v allocations per churn, table %d → %d", allocs, made, len(s.items))
	}
}

// onLoop runs fn on e's first loop and waits for it.
func onLoop(e *Engine, fn func(l *loop)) {
	done := make(chan struct{})
	e.loops[0].exec(func() { fn(e.loops[0]); close(done) })
	<-done
}

// TestConnTableShrinks: after a flood of connections has ended, the loop's
// connection table is small again, and the connection that was open
// throughout still works.
func TestConnTableShrinks(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", listen(t, "tcp", "127.0.0.1:0", echo)), nil)
	keeper, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer keeper.Close()
	keeper.SetDeadline(time.Now().Add(30 * time.Second))
	if got, err := roundTrip(keeper, "k"); err != nil || got != "k" {
		t.Fatalf("%q %v", got, err)
	}
	const flood = 2 * minTable
	var conns []net.Conn
	for range flood {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	nettest.Eventually(t, "the flood", func() bool { return e.Active() == flood+1 })
	var peak int
	onLoop(e, func(l *loop) { peak = len(l.conns.items) })
	for _, c := range conns {
		c.Close()
	}
	nettest.Eventually(t, "the flood to end", func() bool { return e.Active() == 1 })
	var size int
	onLoop(e, func(l *loop) { size = len(l.conns.items) })
	if peak < flood || size > minTable {
		t.Fatalf("connection table: %d at the flood's peak, %d after it", peak, size)
	}
	if got, err := roundTrip(keeper, "still"); err != nil || got != "still" {
		t.Fatalf("the connection kept through the flood: %q %v", got, err)
	}
}

// TestSlotTableNoStaleGeneration: whatever generations a cut-off slot's
// record went through while live (a connection's slot is reused with its
// generation moving on at each use and each close), the record made again
// for that slot never has one of them, so no reference filed for the old
// record names the new one. Here the top slot of a full table is reused
// many times before the table is cut and grows again.
func TestSlotTableNoStaleGeneration(t *testing.T) {
	var s slotTable[rec]
	use := func() *rec {
		r := s.alloc(newRec)
		r.gen = (r.gen + 1) & genMask
		r.free = false
		return r
	}
	end := func(r *rec) {
		r.gen = (r.gen + 1) & genMask
		r.free = true
		s.release(r.slot, recFree, recGen)
	}
	var all []*rec
	for range minTable + 2 {
		all = append(all, use())
	}
	top := all[len(all)-1]
	slot := top.slot
	used := map[uint32]bool{}
	for range 2 * minTable {
		used[top.gen] = true
		end(top)
		if top = use(); top.slot != slot {
			t.Fatalf("reused slot %d, want %d", top.slot, slot)
		}
	}
	used[top.gen] = true
	end(top)
	for _, r := range all[2 : len(all)-1] {
		end(r)
	}
	if s.at(slot) != nil {
		t.Fatalf("slot %d not cut off: table of %d", slot, len(s.items))
	}
	for {
		r := use()
		if r.slot == slot {
			if used[r.gen] {
				t.Fatalf("slot %d made again with generation %d, which a reference to its old record may carry", slot, r.gen)
			}
			return
		}
	}
}

// TestConnTableBurstsKeepRecords: connections that swing between a few and
// bursts a little past minTable cost no new records once the first burst
// has made them: a table is never cut below minTable, so each burst finds
// the records of the one before.
func TestConnTableBurstsKeepRecords(t *testing.T) {
	e := testEngine(t, Options{Loops: 1})
	ln := proxyTo(t, e, testPool(t, 1, "wrr", listen(t, "tcp", "127.0.0.1:0", echo)), nil)
	keeper := dial(t, ln.Addr())
	if got, err := roundTrip(keeper, "k"); err != nil || got != "k" {
		t.Fatalf("%q %v", got, err)
	}
	const burst = minTable + 64
	records := func() []*conn {
		var r []*conn
		onLoop(e, func(l *loop) { r = append(r, l.conns.items...) })
		return r
	}
	var before []*conn
	for round := range 2 {
		var conns []net.Conn
		for range burst {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		nettest.Eventually(t, "the burst", func() bool { return e.Active() == burst+1 })
		during := records()
		if round == 1 {
			for slot := range minTable {
				if during[slot] != before[slot] {
					t.Fatalf("burst %d: slot %d has a new record (table of %d between bursts)", round, slot, len(before))
				}
			}
		}
		for _, c := range conns {
			c.Close()
		}
		nettest.Eventually(t, "the burst to end", func() bool { return e.Active() == 1 })
		before = records()
		if len(before) < minTable {
			t.Fatalf("burst %d: table cut to %d, below %d", round, len(before), minTable)
		}
	}
	if got, err := roundTrip(keeper, "still"); err != nil || got != "still" {
		t.Fatalf("the connection kept through the bursts: %q %v", got, err)
	}
}
