package proxy

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// directUDP is a UDP listener socket whose datagrams go out with a
// sendto(2) each, side by side, instead of through the Go runtime, which
// lets one write at a time into a socket (its per-socket write lock).
//
// All of sipwake's UDP traffic leaves from the one listener socket: at
// 5,000 calls/s that is some 50,000 datagrams a second, and on loopback
// each sendto also delivers the datagram to its receiver. Behind the lock
// they queued; the socket's one reader, which answers retransmissions
// itself, waited there too (seen in goroutine dumps), stopped reading,
// the socket overflowed, clients retransmitted more, and the proxy slid
// into dropping calls with its CPU half idle. The kernel takes parallel
// sends on a UDP socket without trouble.
//
// A send the kernel cannot take at once (a full send buffer: EAGAIN) goes
// the runtime's way, which waits for room.
type directUDP struct {
	*net.UDPConn
	fd     int
	family int

	mu     sync.RWMutex // sends hold it shared, Close alone: no sendto on a closed (reused) descriptor
	closed bool
}

// newDirectUDP wraps c, or returns it as it is when its descriptor or
// address family cannot be read.
func newDirectUDP(c *net.UDPConn) net.PacketConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return c
	}
	fd, family := -1, 0
	var ferr error
	if err := rc.Control(func(f uintptr) {
		fd = int(f)
		family, ferr = syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	}); err != nil || ferr != nil || fd < 0 {
		return c
	}
	return &directUDP{UDPConn: c, fd: fd, family: family}
}

// WriteToUDPAddrPort sends b to to (see udpWriter).
func (d *directUDP) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	d.mu.RLock()
	if d.closed {
		d.mu.RUnlock()
		return 0, net.ErrClosed
	}
	var (
		sent  bool
		errno syscall.Errno
	)
	for {
		if sent, errno = sendto(d.fd, d.family, b, to); errno != syscall.EINTR {
			break
		}
	}
	d.mu.RUnlock()
	switch {
	case !sent || errno == syscall.EAGAIN:
		return d.UDPConn.WriteToUDPAddrPort(b, to)
	case errno != 0:
		return 0, &net.OpError{Op: "write", Net: "udp", Source: d.LocalAddr(), Addr: net.UDPAddrFromAddrPort(to),
			Err: os.NewSyscallError("sendto", errno)}
	}
	return len(b), nil
}

// sendto is sendto(2) of b to to on a socket of family, its address on
// the stack (syscall.Sendto takes it as an interface, one allocation per
// datagram). sent is false when the address does not suit the socket
// (IPv6 on an IPv4 socket, a scoped IPv6 address): the caller then goes
// the runtime's way.
func sendto(fd, family int, b []byte, to netip.AddrPort) (sent bool, errno syscall.Errno) {
	a := to.Addr()
	if !a.IsValid() || a.Zone() != "" {
		return false, 0
	}
	port := to.Port()
	switch family {
	case syscall.AF_INET:
		if a = a.Unmap(); !a.Is4() {
			return false, 0
		}
		var sa syscall.RawSockaddrInet4
		sa.Family = syscall.AF_INET
		*(*[2]byte)(unsafe.Pointer(&sa.Port)) = [2]byte{byte(port >> 8), byte(port)}
		sa.Addr = a.As4()
		return true, rawSendto(fd, b, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
	case syscall.AF_INET6: // a dual-stack socket takes IPv4 as ::ffff:a.b.c.d
		var sa syscall.RawSockaddrInet6
		sa.Family = syscall.AF_INET6
		*(*[2]byte)(unsafe.Pointer(&sa.Port)) = [2]byte{byte(port >> 8), byte(port)}
		sa.Addr = a.As16()
		return true, rawSendto(fd, b, unsafe.Pointer(&sa), unsafe.Sizeof(sa))
	}
	return false, 0
}

// WriteTo is WriteToUDPAddrPort for sipgo's writes.
func (d *directUDP) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		return d.WriteToUDPAddrPort(b, ua.AddrPort())
	}
	return d.UDPConn.WriteTo(b, addr)
}

// Close waits for the sends in progress, then closes the socket.
func (d *directUDP) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return d.UDPConn.Close()
}

// rawSendto is sendto(2) of b to the socket address at sa (salen bytes).
func rawSendto(fd int, b []byte, sa unsafe.Pointer, salen uintptr) syscall.Errno {
	_, _, errno := syscall.Syscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(b))),
		uintptr(len(b)), 0, uintptr(sa), salen)
	return errno
}
