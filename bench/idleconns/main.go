// Command idleconns holds many idle TCP connections open through a proxy so
// that bench/run.sh can measure the proxy's memory per idle connection.
//
// It is both ends of the path: it listens as the backend, dials the proxy as
// the client, and exchanges one byte on every connection so that a proxy that
// connects to its backend lazily has really opened the backend side. Once
// every client connection has its byte back and the backend has accepted as
// many connections, it prints a line starting with "ESTABLISHED" and holds
// everything open until SIGTERM, SIGINT or -hold elapses.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:19203", "backend address to listen on")
	target := flag.String("target", "", "address to dial, normally the proxy (default: -listen, i.e. no proxy)")
	n := flag.Int("n", 4000, "connections to open")
	parallel := flag.Int("parallel", 64, "dials in flight at once")
	timeout := flag.Duration("timeout", 60*time.Second, "give up unless all connections are established within this")
	hold := flag.Duration("hold", 5*time.Minute, "longest time to hold the connections once established")
	flag.Parse()
	if *target == "" {
		*target = *listen
	}
	if err := run(*listen, *target, *n, *parallel, *timeout, *hold); err != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", err)
		os.Exit(1)
	}
}

// raiseNoFile lifts the soft RLIMIT_NOFILE to the hard limit and reports
// whether need descriptors fit under it.
func raiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return os.NewSyscallError("getrlimit", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return os.NewSyscallError("setrlimit", err)
		}
	}
	if lim.Cur < need {
		return fmt.Errorf("RLIMIT_NOFILE is %d, need about %d for both ends", lim.Cur, need)
	}
	return nil
}

func run(listen, target string, n, parallel int, timeout, hold time.Duration) error {
	if n < 1 || parallel < 1 {
		return errors.New("-n and -parallel must be positive")
	}
	if err := raiseNoFile(uint64(2*n + 64)); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// KeepAlive < 0: no TCP keepalive probes, the connections stay silent.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(ctx, "tcp", listen)
	if err != nil {
		return fmt.Errorf("backend listen: %w", err)
	}
	defer ln.Close()

	// Every connection is kept referenced until exit: an unreferenced
	// net.Conn would be closed by its finalizer.
	var (
		mu       sync.Mutex
		held     = make([]net.Conn, 0, 2*n)
		accepted atomic.Int64
		answered atomic.Int64
	)
	keep := func(c net.Conn) {
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	}
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			keep(c)
			go func() {
				// Answer the client's byte, then stay silent.
				var b [1]byte
				c.SetDeadline(time.Now().Add(timeout))
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				if _, err := c.Write(b[:]); err != nil {
					return
				}
				c.SetDeadline(time.Time{})
				answered.Add(1)
			}()
		}
	}()

	start := time.Now()
	deadline := start.Add(timeout)
	dialer := net.Dialer{KeepAlive: -1, Timeout: 10 * time.Second}
	var (
		next     atomic.Int64
		retries  atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	open := func() error {
		var err error
		for attempt := 0; attempt < 5 && time.Now().Before(deadline); attempt++ {
			if attempt > 0 {
				retries.Add(1)
				time.Sleep(200 * time.Millisecond)
			}
			var c net.Conn
			c, err = dialer.DialContext(ctx, "tcp", target)
			if err != nil {
				continue
			}
			c.SetDeadline(deadline)
			var b [1]byte
			b[0] = 'p'
			if _, err = c.Write(b[:]); err == nil {
				_, err = io.ReadFull(c, b[:])
			}
			if err != nil {
				c.Close()
				continue
			}
			c.SetDeadline(time.Time{})
			keep(c)
			return nil
		}
		return err
	}
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := open(); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return fmt.Errorf("dial %s: %w (backend accepted %d, answered %d)", target, firstErr, accepted.Load(), answered.Load())
	}

	// The client side has all its answers, so the backend has accepted at
	// least n connections; more would mean the proxy opened extra ones.
	for answered.Load() < int64(n) {
		if time.Now().After(deadline) {
			return fmt.Errorf("backend answered only %d of %d connections", answered.Load(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("ESTABLISHED n=%d accepted=%d retries=%d elapsed=%s\n",
		n, accepted.Load(), retries.Load(), time.Since(start).Round(time.Millisecond))

	select {
	case <-ctx.Done():
	case <-time.After(hold):
		fmt.Println("hold time over")
	}
	return nil
}
