package healthcheck

import (
	"sync"
	"time"
)

// Clock is the time source of a Checker's scheduling: when probes are due
// and when a passive hold-down ends. Probe timeouts are not on it: they are
// socket deadlines, which the kernel and Go's netpoller enforce in real
// time.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once d has elapsed, as time.AfterFunc does. f may
	// run on any goroutine and must not be assumed to run on a new one.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started, and reports whether
	// it did so.
	Stop() bool
}

// SystemClock is the real clock; it is the default of New.
type SystemClock struct{}

var _ Clock = SystemClock{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// AfterFunc is time.AfterFunc.
func (SystemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// FakeClock is a Clock that moves only when told to, for tests: of this
// package, and of its users that want to drive a Checker's schedule by hand.
// Due callbacks run synchronously on the goroutine that moves the clock, in
// the order of their deadlines (of their creation for equal deadlines), each
// seeing Now equal to its deadline. A callback may arm further timers; those
// that fall due within the same move run in that move too.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers []*fakeTimer // unordered; tests hold few timers
}

var _ Clock = (*FakeClock)(nil)

// NewFakeClock returns a FakeClock that reads start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc arms a timer that calls f when the clock reaches Now()+d. A
// d <= 0 is due at once but runs only at the next Advance or AdvanceToNext,
// never inside AfterFunc, so that a caller holding a lock cannot deadlock.
func (c *FakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &fakeTimer{c: c, when: c.now.Add(max(d, 0)), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves the clock forward by d, running every callback that falls
// due on the way.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	for c.fireNext(end) {
	}
	c.mu.Lock()
	if end.After(c.now) {
		c.now = end
	}
	c.mu.Unlock()
}

// AdvanceToNext moves the clock to the earliest pending deadline and runs
// every callback due then. It returns how far the clock moved, and false
// (without moving it) when no timer is pending.
func (c *FakeClock) AdvanceToNext() (time.Duration, bool) {
	c.mu.Lock()
	next := c.earliest()
	if next == nil {
		c.mu.Unlock()
		return 0, false
	}
	start, when := c.now, next.when
	c.mu.Unlock()
	for c.fireNext(when) {
	}
	return when.Sub(start), true
}

// Pending returns the number of armed timers.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// fireNext runs the earliest timer due at or before end, if any.
func (c *FakeClock) fireNext(end time.Time) bool {
	c.mu.Lock()
	t := c.earliest()
	if t == nil || t.when.After(end) {
		c.mu.Unlock()
		return false
	}
	c.remove(t)
	if t.when.After(c.now) {
		c.now = t.when
	}
	c.mu.Unlock()
	t.f() // without the lock: f may arm or stop timers
	return true
}

func (c *FakeClock) earliest() *fakeTimer {
	var e *fakeTimer
	for _, t := range c.timers {
		if e == nil || t.when.Before(e.when) || t.when.Equal(e.when) && t.seq < e.seq {
			e = t
		}
	}
	return e
}

func (c *FakeClock) remove(t *fakeTimer) bool {
	for i, u := range c.timers {
		if u == t {
			last := len(c.timers) - 1
			c.timers[i] = c.timers[last]
			c.timers[last] = nil
			c.timers = c.timers[:last]
			return true
		}
	}
	return false
}

type fakeTimer struct {
	c    *FakeClock
	when time.Time
	seq  uint64
	f    func()
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.c.remove(t)
}
