package healthcheck

import (
	"errors"
	"testing"
)

// TestTracker pins the rise/fall rules of [pool.health_check] and
// their passive checks and flapping, without time.
//
// A history is one letter per input: s a successful probe, f a failed one,
// P a passive down, U the end of a passive hold-down.
func TestTracker(t *testing.T) {
	refused := errors.New("connect: connection refused")
	type change struct {
		at     int // index in the history
		up     bool
		reason string
	}
	known := func(up bool) State { return State{Up: up, Known: true} }
	cases := []struct {
		desc       string
		rise, fall int
		initial    State
		history    string
		changes    []change
		final      State
	}{
		{desc: "new target: one success puts it up", rise: 2, fall: 3, history: "s",
			changes: []change{{0, true, "first probe succeeded"}}, final: known(true)},
		{desc: "new target: a failure is reported and keeps it down", rise: 2, fall: 3, history: "f",
			changes: []change{{0, false, "first probe failed: connect: connection refused"}}, final: known(false)},
		{desc: "new target failed first: then the normal rise applies", rise: 2, fall: 3, history: "fss",
			changes: []change{{0, false, "first probe failed: connect: connection refused"}, {2, true, "2 consecutive successes"}},
			final:   known(true)},
		{desc: "new target failed first: rise interrupted", rise: 2, fall: 3, history: "fsfsf",
			changes: []change{{0, false, "first probe failed: connect: connection refused"}}, final: known(false)},
		{desc: "up: fall consecutive failures take it down", rise: 2, fall: 3, initial: known(true), history: "sfff",
			changes: []change{{3, false, "3 consecutive failures: connect: connection refused"}}, final: known(false)},
		{desc: "up: flapping below fall changes nothing", rise: 2, fall: 3, initial: known(true), history: "ffsffsffs",
			final: known(true)},
		{desc: "up: a success resets the failure count", rise: 2, fall: 3, initial: known(true), history: "ffsfff",
			changes: []change{{5, false, "3 consecutive failures: connect: connection refused"}}, final: known(false)},
		{desc: "down: flapping below rise changes nothing", rise: 2, fall: 3, initial: known(false), history: "sfsfsfsf",
			final: known(false)},
		{desc: "down: rise consecutive successes bring it up", rise: 3, fall: 3, initial: known(false), history: "ssfsss",
			changes: []change{{5, true, "3 consecutive successes"}}, final: known(true)},
		{desc: "rise 1, fall 1: every change of result counts", rise: 1, fall: 1, initial: known(true), history: "sfsf",
			changes: []change{
				{1, false, "1 consecutive failure: connect: connection refused"},
				{2, true, "1 consecutive success"},
				{3, false, "1 consecutive failure: connect: connection refused"},
			}, final: known(false)},
		{desc: "down then up then down", rise: 2, fall: 2, initial: known(true), history: "ffssff",
			changes: []change{
				{1, false, "2 consecutive failures: connect: connection refused"},
				{3, true, "2 consecutive successes"},
				{5, false, "2 consecutive failures: connect: connection refused"},
			}, final: known(false)},
		{desc: "passive down then rise active successes", rise: 2, fall: 3, initial: known(true), history: "sPss",
			changes: []change{{1, false, ""}, {3, true, "2 consecutive successes"}}, final: known(true)},
		{desc: "passive down resets a rise in progress", rise: 2, fall: 3, initial: known(false), history: "sPsf",
			final: known(false)},
		{desc: "passive down of a down target changes nothing", rise: 2, fall: 3, initial: known(false), history: "P",
			final: known(false)},
		{desc: "passive down of a new target: no first-probe shortcut", rise: 2, fall: 3, history: "Pss",
			changes: []change{{2, true, "2 consecutive successes"}}, final: known(true)},
		{desc: "passive down resets the failure count of an up target", rise: 1, fall: 2, initial: known(true), history: "fPsf",
			changes: []change{{1, false, ""}, {2, true, "1 consecutive success"}}, final: known(true)},
		{desc: "hold-down over", rise: 2, fall: 3, initial: known(true), history: "PU",
			changes: []change{{0, false, ""}, {1, true, ""}}, final: known(true)},
	}
	for _, tc := range cases {
		t.Run(tc.desc, func(t *testing.T) {
			tr := newTracker(tc.rise, tc.fall, tc.initial)
			var got []change
			for i, in := range tc.history {
				var changed bool
				var reason string
				switch in {
				case 's':
					changed, reason = tr.observe(nil)
				case 'f':
					changed, reason = tr.observe(refused)
				case 'P':
					changed = tr.setUp(false)
				case 'U':
					changed = tr.setUp(true)
				}
				if changed {
					got = append(got, change{i, tr.up, reason})
				} else if reason != "" {
					t.Errorf("input %d: reason %q without a change", i, reason)
				}
			}
			if len(got) != len(tc.changes) {
				t.Fatalf("changes = %+v, want %+v", got, tc.changes)
			}
			for i := range got {
				if got[i] != tc.changes[i] {
					t.Errorf("change %d = %+v, want %+v", i, got[i], tc.changes[i])
				}
			}
			if s := tr.state(); s != tc.final {
				t.Errorf("final state = %+v, want %+v", s, tc.final)
			}
		})
	}
}

// TestTrackerInitialState: a reload hands over a State; an Up that is not
// Known is not trusted.
func TestTrackerInitialState(t *testing.T) {
	for _, tc := range []struct {
		desc string
		in   State
		want State
	}{
		{"new", State{}, State{}},
		{"up but not known", State{Up: true}, State{}},
		{"known up", State{Up: true, Known: true}, State{Up: true, Known: true}},
		{"known down", State{Known: true}, State{Known: true}},
	} {
		tr := newTracker(2, 3, tc.in)
		if got := tr.state(); got != tc.want {
			t.Errorf("%s: state = %+v, want %+v", tc.desc, got, tc.want)
		}
	}
}
