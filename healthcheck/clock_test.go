package healthcheck

import (
	"slices"
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestFakeClock(t *testing.T) {
	c := NewFakeClock(epoch)
	var fired []string
	at := map[string]time.Duration{}
	arm := func(name string, d time.Duration) Timer {
		return c.AfterFunc(d, func() {
			fired = append(fired, name)
			at[name] = c.Now().Sub(epoch)
		})
	}
	arm("c", 3*time.Second)
	arm("a", time.Second)
	arm("b1", 2*time.Second)
	arm("b2", 2*time.Second) // same deadline: creation order
	stopped := arm("x", 2*time.Second)
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer returned false")
	}
	if stopped.Stop() {
		t.Fatal("second Stop returned true")
	}
	// A callback that arms a timer falling due within the same Advance.
	c.AfterFunc(1500*time.Millisecond, func() { arm("nested", 100*time.Millisecond) })

	c.Advance(2 * time.Second)
	if want := []string{"a", "nested", "b1", "b2"}; !slices.Equal(fired, want) {
		t.Fatalf("fired %v, want %v", fired, want)
	}
	if at["a"] != time.Second || at["nested"] != 1600*time.Millisecond || at["b2"] != 2*time.Second {
		t.Errorf("callbacks saw Now at %v", at)
	}
	if got := c.Now().Sub(epoch); got != 2*time.Second {
		t.Errorf("Now after Advance = %v, want 2s", got)
	}
	if c.Pending() != 1 {
		t.Errorf("Pending = %d, want 1", c.Pending())
	}

	d, ok := c.AdvanceToNext()
	if !ok || d != time.Second || fired[len(fired)-1] != "c" {
		t.Errorf("AdvanceToNext = %v, %v; fired %v", d, ok, fired)
	}
	if _, ok := c.AdvanceToNext(); ok {
		t.Error("AdvanceToNext with no timer returned true")
	}
	if got := c.Now().Sub(epoch); got != 3*time.Second {
		t.Errorf("Now = %v, want 3s", got)
	}

	// A timer armed with d <= 0 is due now but runs at the next move only.
	ran := false
	c.AfterFunc(-time.Second, func() { ran = true })
	if ran {
		t.Fatal("AfterFunc ran its callback itself")
	}
	c.Advance(0)
	if !ran {
		t.Fatal("due timer did not run on Advance(0)")
	}
}
