package l7

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	rd, wd time.Time
	calls  int
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error  { c.rd = t; c.calls++; return nil }
func (c *deadlineConn) SetWriteDeadline(t time.Time) error { c.wd = t; c.calls++; return nil }

func TestLazyDeadlines(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	slack := time.Second
	fc := &deadlineConn{}
	c := &lazyDeadlines{Conn: fc, slack: slack}

	c.SetReadDeadline(base)
	if fc.rd != base.Add(slack) || fc.calls != 1 {
		t.Fatalf("first: %v after %d calls", fc.rd, fc.calls)
	}
	// Forward by less than the slack: nothing passed on.
	for i := 1; i <= 10; i++ {
		c.SetReadDeadline(base.Add(time.Duration(i) * 100 * time.Millisecond))
	}
	if fc.calls != 1 {
		t.Fatalf("%d calls for moves within the slack", fc.calls)
	}
	// Past what is in force: passed on.
	c.SetReadDeadline(base.Add(1500 * time.Millisecond))
	if fc.rd != base.Add(2500*time.Millisecond) || fc.calls != 2 {
		t.Fatalf("later: %v after %d calls", fc.rd, fc.calls)
	}
	// Much earlier: passed on, never left later than asked plus slack.
	c.SetReadDeadline(base)
	if fc.rd != base.Add(slack) || fc.calls != 3 {
		t.Fatalf("earlier: %v after %d calls", fc.rd, fc.calls)
	}
	// Cleared, once.
	c.SetReadDeadline(time.Time{})
	c.SetReadDeadline(time.Time{})
	if !fc.rd.IsZero() || fc.calls != 4 {
		t.Fatalf("cleared: %v after %d calls", fc.rd, fc.calls)
	}
	// The write deadline is its own.
	c.SetWriteDeadline(base)
	if fc.wd != base.Add(slack) || !fc.rd.IsZero() {
		t.Fatalf("write %v, read %v", fc.wd, fc.rd)
	}
}

// TestLazyDeadlinesBounds: whatever the sequence, the deadline in force is
// never earlier than the one last asked for and at most slack later.
func TestLazyDeadlinesBounds(t *testing.T) {
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	slack := 250 * time.Millisecond
	r := rand.New(rand.NewPCG(1, 2))
	fc := &deadlineConn{}
	c := &lazyDeadlines{Conn: fc, slack: slack}
	for i := 0; i < 100000; i++ {
		var want time.Time
		if r.IntN(20) > 0 {
			want = base.Add(time.Duration(r.Int64N(int64(10 * time.Second))))
		}
		c.SetReadDeadline(want)
		switch {
		case want.IsZero():
			if !fc.rd.IsZero() {
				t.Fatalf("step %d: asked none, in force %v", i, fc.rd)
			}
		case fc.rd.Before(want) || fc.rd.Sub(want) > slack:
			t.Fatalf("step %d: asked %v, in force %v", i, want, fc.rd)
		}
	}
}
