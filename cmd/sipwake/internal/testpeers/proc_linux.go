package testpeers

import "syscall"

// sysProcAttr puts a peer in its own process group (Stop signals the group)
// and asks the kernel to end it if the test binary dies first (a test
// timeout panics past every Cleanup). Kamailio gets SIGTERM, on which its
// main process stops the workers it forked; SIGKILL would leave them
// running. Every other peer is killed outright.
func sysProcAttr(name string) *syscall.SysProcAttr {
	sig := syscall.SIGKILL
	if name == "kamailio" {
		sig = syscall.SIGTERM
	}
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: sig}
}
