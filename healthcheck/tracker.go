package healthcheck

import "fmt"

// tracker is the rise/fall state machine of one target. It holds no time
// and does no I/O: it is fed probe results and passive verdicts in order
// and says when the target's health changes. The Checker serialises calls
// under its lock.
type tracker struct {
	rise, fall int
	up, known  bool
	// Consecutive results against the current state: successes while
	// down, failures while up. The other count is always 0.
	successes, failures int
}

func newTracker(rise, fall int, s State) tracker {
	return tracker{rise: rise, fall: fall, up: s.Known && s.Up, known: s.Known}
}

func (t *tracker) state() State { return State{Up: t.up, Known: t.known} }

// observe records one probe result, err == nil being a success, and reports
// whether an Event is due and its reason.
func (t *tracker) observe(err error) (changed bool, reason string) {
	if !t.known {
		// The first verdict on a new target: one success is enough, so
		// that a restarted lbd serves as soon as its backends answer.
		t.known = true
		if err == nil {
			t.up = true
			return true, "first probe succeeded"
		}
		return true, "first probe failed: " + err.Error()
	}
	if err == nil {
		t.failures = 0
		if t.up {
			return false, ""
		}
		t.successes++
		if t.successes < t.rise {
			return false, ""
		}
		t.up, t.successes = true, 0
		return true, fmt.Sprintf("%d consecutive %s", t.rise, plural(t.rise, "success", "successes"))
	}
	t.successes = 0
	if !t.up {
		return false, ""
	}
	t.failures++
	if t.failures < t.fall {
		return false, ""
	}
	t.up, t.failures = false, 0
	return true, fmt.Sprintf("%d consecutive %s: %v", t.fall, plural(t.fall, "failure", "failures"), err)
}

// setUp forces the health to up (a passive hold-down ending) or down (a
// passive verdict) and reports whether it changed. Either way the target is
// then known, so a target forced down needs the full rise to come back.
func (t *tracker) setUp(up bool) (changed bool) {
	changed = t.up != up
	t.up, t.known = up, true
	t.successes, t.failures = 0, 0
	return changed
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
