package server

import (
	"net"
	"os"
)

// notify sends a systemd notification (sd_notify) when NOTIFY_SOCKET is
// set, and does nothing otherwise. Errors are ignored: a lost notification
// must never stop the load balancer, and systemd reports a missing READY
// by itself.
func notify(state string) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
