package l4

// Connection and flow records live in per-loop tables indexed by slot: the
// slot is what epoll events and timer references carry. A record is
// reused once freed, so steady traffic allocates nothing, but a table a
// flood has grown must not keep its peak size for ever. Two rules give
// that back:
//
//   - the free list is a min-heap, so a new record takes the lowest free
//     slot and live records gather at the bottom of the table;
//   - once the table is past minTable records, no more than a quarter of
//     it is live and the highest live record is in its lower half, the
//     free records above that one are cut off, with a new, smaller table,
//     which keeps minTable records at least.
//
// Anything that holds a slot (timer references, pending lists, epoll
// events of a closed socket) is checked against the table's length before
// use, and a record made for a cut-off slot starts from a generation past
// every one the records cut off had, so that a stale reference never names
// it.

// minTable is the least table worth cutting down, and the least a cut
// leaves: 1024 records take about 400 KB, and below it a cut would only be
// undone by the next burst, which would make its records again.
const minTable = 1024

// freeList is a min-heap of free slots.
type freeList []int32

func (h *freeList) push(s int32) {
	*h = append(*h, s)
	a := *h
	for i := len(a) - 1; i > 0; {
		p := (i - 1) / 2
		if a[p] <= a[i] {
			break
		}
		a[p], a[i] = a[i], a[p]
		i = p
	}
}

// pop takes the lowest free slot, or -1 when none is free.
func (h *freeList) pop() int32 {
	a := *h
	if len(a) == 0 {
		return -1
	}
	s := a[0]
	n := len(a) - 1
	a[0] = a[n]
	*h = a[:n]
	a.down(0)
	return s
}

func (h freeList) down(i int) {
	n := len(h)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h[r] < h[l] {
			m = r
		}
		if h[i] <= h[m] {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// slotTable is a table of records of type T addressed by slot.
type slotTable[T any] struct {
	items []*T
	free  freeList
	// top bounds the live records: none is at or above it. It rises as
	// records are taken and falls as the highest live one is freed.
	top int
	// genSeed is the generation a newly made record starts from: past
	// those of every record cut off so far.
	genSeed uint32
}

// alloc takes the lowest free record, or makes one with build.
func (s *slotTable[T]) alloc(build func(slot int32, gen uint32) *T) *T {
	idx := s.free.pop()
	var r *T
	if idx >= 0 {
		r = s.items[idx]
	} else {
		// A slot past the table's end may have been cut off with
		// references to it still filed: a generation none of them
		// carries keeps them from naming this record.
		idx = int32(len(s.items))
		s.genSeed = (s.genSeed + 1) & genMask
		r = build(idx, s.genSeed)
		s.items = append(s.items, r)
	}
	s.top = max(s.top, int(idx)+1)
	return r
}

// release returns the record in slot, which isFree now reports free, to
// the free list, and cuts the table down when a flood has left it mostly
// empty; gen is a record's generation. Lowering top passes only records
// freed since it last passed them, so a release costs O(1) amortised.
func (s *slotTable[T]) release(slot int32, isFree func(*T) bool, gen func(*T) uint32) {
	s.free.push(slot)
	if int(slot)+1 == s.top {
		for s.top > 0 && isFree(s.items[s.top-1]) {
			s.top--
		}
	}
	n := len(s.items)
	if n > minTable && s.top <= n/2 && n-len(s.free) <= n/4 {
		s.cut(gen)
	}
}

// cut drops the records from top, or from minTable if that is higher, up,
// in a new table. A record's generation moves on with each use of its
// slot, by as much as that slot's traffic made it, so a slot made again
// must start past the highest generation of those dropped, not merely
// from a new one.
func (s *slotTable[T]) cut(gen func(*T) uint32) {
	n := max(s.top, minTable)
	for _, r := range s.items[n:] {
		s.genSeed = max(s.genSeed, gen(r))
	}
	t := make([]*T, n)
	copy(t, s.items)
	keep := make(freeList, 0, n)
	for _, slot := range s.free {
		if int(slot) < n {
			keep = append(keep, slot)
		}
	}
	for i := len(keep)/2 - 1; i >= 0; i-- {
		keep.down(i)
	}
	s.items, s.free = t, keep
}

// at is the record in slot, or nil when the slot has been cut off.
func (s *slotTable[T]) at(slot int32) *T {
	if slot < 0 || int(slot) >= len(s.items) {
		return nil
	}
	return s.items[slot]
}
