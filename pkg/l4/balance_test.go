package l4

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// nameBackend answers every connection with its name.
func nameBackend(t *testing.T, name string) netip.AddrPort {
	return listen(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, name) })
}

// from connects to the proxy from a given loopback source address and
// returns the name of the backend that answered.
func from(t *testing.T, src string, to netip.AddrPort) string {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", to.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAlgorithms runs each balancer through the data plane: every
// algorithm reaches every backend, and maglev keeps a client address on
// one backend.
func TestAlgorithms(t *testing.T) {
	var addrs []netip.AddrPort
	for i := 0; i < 3; i++ {
		addrs = append(addrs, nameBackend(t, fmt.Sprint("b", i)))
	}
	for _, alg := range []string{"maglev", "least_conn", "wrr", "p2c"} {
		t.Run(alg, func(t *testing.T) {
			e := testEngine(t, Options{})
			ln := proxyTo(t, e, testPool(t, e.Loops(), alg, addrs...), nil)
			seen := map[string]int{}
			for i := 0; i < 60; i++ {
				src := fmt.Sprintf("127.0.%d.%d", i/8, 2+i%8*3)
				first := from(t, src, ln.Addr())
				seen[first]++
				if alg == "maglev" {
					for j := 0; j < 3; j++ {
						if again := from(t, src, ln.Addr()); again != first {
							t.Fatalf("client %s went to %s, then %s", src, first, again)
						}
					}
				}
			}
			if len(seen) != 3 {
				t.Fatalf("backends reached: %v", seen)
			}
		})
	}
}
