//go:build !linux

package proxy

import "net"

// udpRecvBuffer is not known off Linux.
func udpRecvBuffer(*net.UDPConn) (int, bool) { return 0, false }
