package l4

import "math/bits"

// wheel is a hashed timing wheel that holds at most one live entry per
// connection. It is owned by one event loop.
//
// Entries are lazy: a connection's deadline may move later (every byte
// forwarded pushes its idle deadline) without touching the wheel. When its
// slot comes due the loop asks the connection for its current deadline and
// either expires it or files it again. An entry whose connection has since
// been closed, reused, or filed elsewhere is recognised by its generation and
// slot and dropped. Moving a deadline earlier files a new entry and leaves
// the old one to be dropped.
type wheel struct {
	tick  int64 // nanoseconds per slot
	slots [][]timerRef
	// filed has a bit set for each slot that holds entries, so that the
	// next populated slot is found a word (64 slots) at a time.
	filed []uint64
	next  int64 // the first tick not yet processed
	live  int   // entries filed, including stale ones
}

// timerRef names a record, a connection or a flow as kind says, by its
// slot and the generation it had when filed.
type timerRef struct {
	slot int32
	gen  uint32
	kind uint8 // kindTCP or kindUDP
}

func newWheel(tick int64, nslots int, now int64) *wheel {
	return &wheel{tick: tick, slots: make([][]timerRef, nslots), filed: make([]uint64, (nslots+63)/64), next: now / tick}
}

// tickOf is the tick in which a deadline fires: never earlier than the
// deadline, and never before the next unprocessed tick.
func (w *wheel) tickOf(deadline int64) int64 {
	t := (deadline + w.tick - 1) / w.tick
	if t < w.next {
		t = w.next
	}
	// Deadlines beyond the wheel's span are filed in its last slot and
	// refiled when they come round.
	if max := w.next + int64(len(w.slots)) - 1; t > max {
		t = max
	}
	return t
}

// add files ref for deadline and returns the tick it was filed under.
func (w *wheel) add(ref timerRef, deadline int64) int64 {
	t := w.tickOf(deadline)
	i := t % int64(len(w.slots))
	w.slots[i] = append(w.slots[i], ref)
	w.filed[i/64] |= 1 << (i % 64)
	w.live++
	return t
}

// advance processes every tick that has fully passed by now, calling fire
// for each entry in them. fire files the connection again when it has not
// expired; it must not rely on entries of the current tick being visited in
// any order. Empty ticks are skipped, not walked: after a long sleep the
// cost is the filed entries', not the elapsed time's.
func (w *wheel) advance(now int64, fire func(ref timerRef, tick int64)) {
	end := now / w.tick // ticks up to end have begun, so their deadlines passed
	for w.next <= end {
		t := w.nextFiled()
		if t < 0 || t > end {
			// Nothing is due before end: every filed entry's tick is
			// later, and stays in the window from the new next on.
			w.next = end + 1
			return
		}
		w.next = t
		i := w.next % int64(len(w.slots))
		refs := w.slots[i]
		w.slots[i] = refs[:0:0]
		w.filed[i/64] &^= 1 << (i % 64)
		w.next++
		w.live -= len(refs)
		for _, r := range refs {
			fire(r, t)
		}
		if len(w.slots[i]) > 0 {
			w.filed[i/64] |= 1 << (i % 64) // fire filed anew here
		}
		if cap(refs) <= 64 && len(w.slots[i]) == 0 {
			// Reuse the backing array: fire may have appended to the
			// slot anew (a deadline exactly one span away), so only when
			// it stayed empty.
			w.slots[i] = refs[:0]
		}
	}
}

// nextFiled is the first tick from w.next on whose slot holds entries, or
// -1 when none does. Each slot of the window from w.next holds the entries
// of exactly one tick, since add never files before w.next nor a full span
// after it.
func (w *wheel) nextFiled() int64 {
	if w.live == 0 {
		return -1
	}
	n := int64(len(w.slots))
	start := w.next % n
	// From start to the end of the slots, then from 0 back to start.
	if i := w.firstSet(start, n); i >= 0 {
		return w.next + (i - start)
	}
	if i := w.firstSet(0, start); i >= 0 {
		return w.next + (n - start) + i
	}
	return -1
}

// firstSet is the first slot index in [from, to) whose bit is set, or -1.
func (w *wheel) firstSet(from, to int64) int64 {
	for from < to {
		word := w.filed[from/64] >> (from % 64)
		if word != 0 {
			i := from + int64(bits.TrailingZeros64(word))
			if i < to {
				return i
			}
			return -1
		}
		from = (from/64 + 1) * 64
	}
	return -1
}

// untilNext is how long until the next tick with entries fires, for the
// epoll timeout; -1 when nothing is filed. A loop whose connections are all
// idle therefore sleeps until the first of their deadlines (or a wheel's
// span, for deadlines beyond it), not from tick to tick.
func (w *wheel) untilNext(now int64) int64 {
	t := w.nextFiled()
	if t < 0 {
		return -1
	}
	// Tick t holds deadlines up to its start (tickOf rounds up), and
	// advance processes it from then on.
	d := t*w.tick - now
	if d < 0 {
		d = 0
	}
	return d
}
