// Package nettest holds what the tests of several packages share: echo
// backends, and Eventually, the one way a test waits for a state it has no
// event for. Only tests import it. (A test that needs lbd on a port binds
// "127.0.0.1:0" and reads the port back from the server, its admin API or
// its log: a port found free beforehand may be taken by another process
// before lbd binds it.)
package nettest

import (
	"io"
	"net"
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing the test with what after
// 10 seconds. It observes state of the system under test that has no
// event to wait on (counters, connection counts, probes running on their
// own goroutines), never paces a test.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// EchoTCP runs a TCP echo server on 127.0.0.1 until the test ends and
// returns its address.
func EchoTCP(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

// EchoUDP runs a UDP server on 127.0.0.1 that answers every datagram with
// prefix followed by the datagram, until the test ends.
func EchoUDP(t testing.TB, prefix string) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.WriteToUDPAddrPort(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	return c.LocalAddr().String()
}
