// Command lbctl is the operator CLI for lbd. It drives a running daemon
// through its admin socket with pkg/admin's client; see docs/reference.md for
// the commands and exit codes.
package main

import (
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, env{
		getenv:       os.Getenv,
		isTerminal:   isTerminal,
		pollInterval: 100 * time.Millisecond,
	}))
}

// isTerminal reports whether w is a terminal, where drain --wait may
// redraw its progress line.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
