package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lbd-lb/lbd/pkg/admin"
)

// errStillActive ends drain --wait when the backend stops draining (it was
// enabled again) with connections still open: they would never reach 0.
var errStillActive = errors.New("no longer draining")

// clearLine returns a terminal's cursor to the start of its line and
// erases it.
const clearLine = "\r\x1b[K"

// waitDrained polls the drained backend b every env.pollInterval until it
// has no active connections and returns it as last seen. A timeout of 0
// waits without limit. On a terminal it redraws the remaining count in
// place on one line, and erases that line before returning.
func (c *cli) waitDrained(ctx context.Context, b admin.Backend, timeout time.Duration) (admin.Backend, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	tty := c.env.isTerminal(c.stdout)
	drawn := false
	defer func() {
		if drawn {
			fmt.Fprint(c.stdout, clearLine)
		}
	}()
	ticker := time.NewTicker(c.env.pollInterval)
	defer ticker.Stop()
	client := c.client()
	for b.ActiveConnections > 0 {
		if b.State == "active" {
			return b, fmt.Errorf("%s/%s: %w (enabled again) with %s", b.Pool, b.Name, errStillActive, activeConns(b.ActiveConnections))
		}
		if tty {
			fmt.Fprintf(c.stdout, "%sdraining %s/%s: %s", clearLine, b.Pool, b.Name, activeConns(b.ActiveConnections))
			drawn = true
		}
		select {
		case <-ctx.Done():
			return b, c.drainTimeout(b, timeout)
		case <-ticker.C:
		}
		pollCtx, cancel := context.WithTimeout(ctx, callTimeout)
		next, err := client.Backend(pollCtx, b.Pool, b.Name)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return b, c.drainTimeout(b, timeout)
			}
			return b, err
		}
		b = next
	}
	return b, nil
}

func (c *cli) drainTimeout(b admin.Backend, timeout time.Duration) error {
	return fmt.Errorf("%w after %s: %s/%s still has %s", errTimeout, timeout, b.Pool, b.Name, activeConns(b.ActiveConnections))
}

func activeConns(n int64) string {
	if n == 1 {
		return "1 active connection"
	}
	return fmt.Sprintf("%d active connections", n)
}
