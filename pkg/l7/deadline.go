package l7

import (
	"net"
	"time"
)

// lazyDeadlines passes a connection's deadline changes on only when they
// matter. fasthttp's client moves the read and write deadlines of a
// backend connection forward on every request, each move a runtime timer
// update; here a deadline that moves later by less than slack is not
// passed on, and one that is passed on is pushed slack further. The
// deadline in force is thus never earlier than the one asked for and at
// most slack later: a backend timeout fires up to slack late, never early.
//
// It is used by one goroutine at a time, as fasthttp uses a connection.
type lazyDeadlines struct {
	net.Conn
	slack  time.Duration
	rd, wd time.Time // in force on Conn; zero for none
}

// lazySlack is the slack for a timeout d: an eighth of it, at most a second.
func lazySlack(d time.Duration) time.Duration { return min(d/8, time.Second) }

func (c *lazyDeadlines) SetReadDeadline(t time.Time) error {
	return c.set(&c.rd, t, c.Conn.SetReadDeadline)
}

func (c *lazyDeadlines) SetWriteDeadline(t time.Time) error {
	return c.set(&c.wd, t, c.Conn.SetWriteDeadline)
}

func (c *lazyDeadlines) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *lazyDeadlines) set(cur *time.Time, t time.Time, apply func(time.Time) error) error {
	if t.IsZero() {
		if cur.IsZero() {
			return nil
		}
	} else {
		if !cur.IsZero() && !cur.Before(t) && cur.Sub(t) <= c.slack {
			return nil // in force: no earlier than t, at most slack later
		}
		t = t.Add(c.slack)
	}
	if err := apply(t); err != nil {
		return err
	}
	*cur = t
	return nil
}
