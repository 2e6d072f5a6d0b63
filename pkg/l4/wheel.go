package l4

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
	next  int64 // the first tick not yet processed
	live  int   // entries filed, including stale ones
}

// timerRef names a connection slot and the generation it had when filed.
type timerRef struct {
	slot int32
	gen  uint32
}

func newWheel(tick int64, nslots int, now int64) *wheel {
	return &wheel{tick: tick, slots: make([][]timerRef, nslots), next: now / tick}
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
	w.live++
	return t
}

// advance processes every tick that has fully passed by now, calling fire
// for each entry in them. fire files the connection again when it has not
// expired; it must not rely on entries of the current tick being visited in
// any order.
func (w *wheel) advance(now int64, fire func(ref timerRef, tick int64)) {
	end := now / w.tick // ticks strictly before end have passed
	for w.next <= end {
		i := w.next % int64(len(w.slots))
		refs := w.slots[i]
		w.slots[i] = refs[:0:0]
		t := w.next
		w.next++
		w.live -= len(refs)
		for _, r := range refs {
			fire(r, t)
		}
		if cap(refs) <= 64 && len(w.slots[i]) == 0 {
			// Reuse the backing array: fire may have appended to the
			// slot anew (a deadline exactly one span away), so only when
			// it stayed empty.
			w.slots[i] = refs[:0]
		}
	}
}

// untilNext is how long until the next tick with entries could fire, for
// the epoll timeout; -1 when nothing is filed.
func (w *wheel) untilNext(now int64) int64 {
	if w.live == 0 {
		return -1
	}
	d := w.next*w.tick - now
	if d < 0 {
		d = 0
	}
	return d
}
