//go:build !linux

package proxy

import "net"

// newDirectUDP leaves c as it is off Linux (see udpsend_linux.go).
func newDirectUDP(c *net.UDPConn) net.PacketConn { return c }
