package server

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/lbd-lb/lbd/pkg/config"
)

// Run starts a server for cfg and serves until SIGTERM or SIGINT arrives
// on signals; SIGHUP reloads. On the first SIGTERM or SIGINT it stops
// accepting and lets open connections finish for up to shutdown_timeout; a
// second one closes them at once. It returns nil after a clean shutdown.
func Run(cfg *config.Config, opts Options, signals <-chan os.Signal) error {
	s, err := New(cfg, opts)
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	s.metricsReg.Loaded(time.Now(), false)
	s.notify("READY=1")
	for sig := range signals {
		if sig == syscall.SIGHUP {
			s.Reload() // logged and counted inside
			continue
		}
		break
	}
	s.notify("STOPPING=1")
	ctx, cancel := context.WithTimeout(context.Background(), s.ShutdownTimeout())
	defer cancel()
	go func() {
		for {
			select {
			case sig := <-signals:
				if sig == syscall.SIGHUP {
					continue
				}
				s.log.Warn("second signal: closing connections now")
				cancel()
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	if err := s.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
