package balancer

import (
	"fmt"
	"net/netip"
	"sync/atomic"
)

// backends makes n backends named backend-0000, backend-0001, ... with the
// weights given by weight(i), each with its own Active counter.
func backends(n int, weight func(i int) int) []Backend {
	bs := make([]Backend, n)
	for i := range bs {
		bs[i] = Backend{Name: fmt.Sprintf("backend-%04d", i), Weight: weight(i), Active: new(atomic.Int64)}
	}
	return bs
}

func one(int) int { return 1 }

// counts is the number of slots each backend owns.
func counts(mg *Maglev) []int {
	c := make([]int, mg.n)
	for s := 0; s < mg.TableSize(); s++ {
		c[mg.Owner(s)]++
	}
	return c
}

// names is the table as backend names, comparable across input orders.
func names(mg *Maglev, bs []Backend) []string {
	t := make([]string, mg.TableSize())
	for s := range t {
		t[s] = bs[mg.Owner(s)].Name
	}
	return t
}

func mustMaglev(t interface{ Fatal(...any) }, bs []Backend, size int) *Maglev {
	mg, err := NewMaglev(bs, Options{TableSize: size})
	if err != nil {
		t.Fatal(err)
	}
	return mg
}

func mustAddr(t interface{ Fatal(...any) }, s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
