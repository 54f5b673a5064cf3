package proxy

import (
	"net"
	"syscall"
)

// udpRecvBuffer is the receive buffer the kernel gave c, in the bytes
// asked for: Linux reports twice the size it grants room for (the other
// half is its own bookkeeping), and caps what is asked at
// net.core.rmem_max.
func udpRecvBuffer(c *net.UDPConn) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || serr != nil {
		return 0, false
	}
	return n / 2, true
}
